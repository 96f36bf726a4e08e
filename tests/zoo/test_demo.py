"""`specvlm demo` (specvlm.zoo.demo.run_demo): the report's speedup comes from the fastest timed run of
each method after a full-length warm-up, whatever order the methods ran in; the identity check covers
every run. A fake engine with scripted decode times stands in for the models (no timing here)."""

from __future__ import annotations

import pytest

from specvlm import zoo
from specvlm.audit import Divergence
from specvlm.stats import GenerationResult, GenerationStats
from specvlm.zoo import demo


class FakeEngine:
    """Returns scripted results in call order and records (method, max_new_tokens) of each call."""

    def __init__(self, script):
        self.script = list(script)  # [(method, decode_s, token_ids)] in the expected call order
        self.calls = []
        self.target = type("T", (), {})()
        self.target.config = type("C", (), {"vision_config": type("V", (), {"image_size": 32})()})()
        self.target.generation_config = type("G", (), {"eos_token_id": 2})()

    def build_inputs(self, video, prompt, num_frames=None):
        return {"video": video, "prompt": prompt}

    def audit(self, inputs, expected, got, **kwargs):
        """A scripted classification of the first differing run (the real one reads the target's scores)."""
        self.audited = (list(expected), list(got))
        return Divergence("mismatch", position=2, expected=expected[2], got=got[2], margin=1.5, tolerance=0.125, dtype="bf16")

    def generate(self, *, inputs, max_new_tokens, method, **kwargs):
        self.calls.append((method, max_new_tokens))
        expected, decode_s, token_ids = self.script.pop(0)
        assert method == expected, (method, expected, self.calls)
        stats = GenerationStats(method=method, new_tokens=len(token_ids), decode_s=decode_s, accepted_lengths=[1, 1])
        return GenerationResult(token_ids=list(token_ids), text="a caption", stats=stats)


def _run(monkeypatch, script, **kwargs):
    engine = FakeEngine(script)
    monkeypatch.setattr(demo, "_checkpoints", lambda root: ("trained", root / "target", root / "draft"))
    monkeypatch.setattr(demo.SpecVLM, "from_pretrained", classmethod(lambda cls, *a, **k: engine))
    report = demo.run_demo(num_frames=8, max_new_tokens=24, **kwargs)
    assert not engine.script, "not every scripted run happened"
    return engine, report


TOKENS = [5, 6, 7]

# a cold first ar run (9 s), then timed runs whose first, last and warm-up ratios all differ from the
# ratio of the fastest runs (1.0 s / 0.5 s = 2x)
SCRIPT = [
    ("ar", 9.0, TOKENS),
    ("specvlm", 5.0, TOKENS),
    ("ar", 3.0, TOKENS),
    ("specvlm", 0.5, TOKENS),
    ("ar", 1.0, TOKENS),
    ("specvlm", 0.8, TOKENS),
]


def test_speedup_is_fastest_ar_over_fastest_specvlm_after_full_length_warmup(monkeypatch):
    engine, report = _run(monkeypatch, SCRIPT)
    # warm-up over the full length, then alternating timed runs
    assert engine.calls == [(m, 24) for m in ("ar", "specvlm", "ar", "specvlm", "ar", "specvlm")]
    assert report.decode_s == {"ar": [3.0, 1.0], "specvlm": [0.5, 0.8]}
    assert report.results["ar"].stats.decode_s == 1.0
    assert report.results["specvlm"].stats.decode_s == 0.5
    assert report.speedup("specvlm") == pytest.approx(2.0)
    assert report.speedup("ar") == pytest.approx(1.0)
    assert report.identical
    lines = report.lines()
    spec_line = next(line for line in lines if line.startswith("specvlm "))
    assert "decode speedup vs ar=2.00x (best of 2 runs each)" in spec_line
    assert "decode=   500.0 ms" in spec_line
    assert any("fastest of 2 alternating timed runs" in line and "full-length" in line for line in lines)
    assert lines[-1] == "SpecVLM output token ids are identical to plain decoding"


def test_a_run_without_verify_steps_prints_no_tau():
    """One new token (the prefill's): tau is undefined and the line says so instead of failing."""
    stats = GenerationStats(method="ar", new_tokens=1, decode_s=0.0)
    res = GenerationResult(token_ids=[5], text="a", stats=stats)
    report = demo.DemoReport(model="trained", prompt="p", results={"ar": res, "specvlm": res}, identical=True)
    assert any(line.startswith("ar       tau=    -") for line in report.lines())


def test_speedup_does_not_depend_on_which_method_ran_first(monkeypatch):
    """The same timed runs in the other order within each round give the same speedup."""
    _, report = _run(monkeypatch, SCRIPT)
    swapped = [("ar", 9.0, TOKENS), ("specvlm", 5.0, TOKENS), ("ar", 1.0, TOKENS), ("specvlm", 0.8, TOKENS),
               ("ar", 3.0, TOKENS), ("specvlm", 0.5, TOKENS)]
    _, report2 = _run(monkeypatch, swapped)
    assert report2.speedup("specvlm") == report.speedup("specvlm") == pytest.approx(2.0)


def test_any_run_with_different_tokens_is_reported(monkeypatch):
    script = [s if i != 5 else ("specvlm", 0.8, [5, 6, 8]) for i, s in enumerate(SCRIPT)]
    engine, report = _run(monkeypatch, script)
    assert not report.identical
    assert engine.audited == (TOKENS, [5, 6, 8])  # the first ar run is the reference; the differing run is classified
    assert report.divergence.verdict == "mismatch"
    assert report.lines()[-1] == (
        "SpecVLM output token ids are DIFFERENT FROM plain decoding: mismatch at token 2: expected 7, got 8, "
        "reference margin 1.5 (tolerance 0.125 for bf16)"
    )


def test_without_warmup_and_one_timed_run(monkeypatch):
    engine, report = _run(monkeypatch, [("ar", 2.0, TOKENS), ("specvlm", 0.5, TOKENS)], warmup=False, timed_runs=1)
    assert engine.calls == [("ar", 24), ("specvlm", 24)]
    assert report.speedup("specvlm") == pytest.approx(4.0)
    assert any("decode speedup vs ar=4.00x (1 run each)" in line for line in report.lines())
    with pytest.raises(ValueError, match="timed_runs"):
        demo.run_demo(timed_runs=0)


@pytest.mark.skipif(set(zoo.available()) != set(zoo.CHECKPOINTS), reason="embedded checkpoints are not built")
def test_demo_on_the_embedded_pair_is_lossless():
    """A short real run: the embedded pair, 8 frames, 16 new tokens, no warm-up, one timed round."""
    report = demo.run_demo(num_frames=8, max_new_tokens=16, warmup=False, timed_runs=1)
    assert report.model == "trained"
    assert report.identical
    assert report.results["ar"].stats.new_tokens > 0
    assert report.decode_s.keys() == {"ar", "specvlm"}
    assert report.lines()[-1] == "SpecVLM output token ids are identical to plain decoding"
