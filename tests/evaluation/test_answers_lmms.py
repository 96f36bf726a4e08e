"""Answer extraction modes: SpecVLM's own reader and the lmms-eval-compatible one, on sample strings
(including those where they differ), the config key, and a tiny specvlm-eval run graded both ways.

The lmms-eval mode is also compared with lmms-eval's own task code in tests/evaluation/test_lmms_plugin.py (that
test needs lmms-eval installed, in its own environment)."""

from __future__ import annotations

import json

import pytest
import yaml

from specvlm_eval.cli import main
from specvlm_eval.config import ConfigError, EvalConfig
from specvlm_eval.metrics import grade, regrade, summarize
from specvlm.answers import EXTRACTION_MODES, extract_answer, extract_choice, lmms_eval_choice
from test_eval_datasets import build_layouts

OPTIONS = ("left", "right", "up", "down")
BENCHMARKS = ("videomme", "mlvu", "mvbench", "longvideobench")

# text -> (specvlm, lmms-eval videomme, mlvu, mvbench, longvideobench), four options (left, right, up, down)
CASES = {
    "B": ("B", "B", "B", "B", "B"),
    "(C) the red one": ("C", "C", "C", "C", "C"),
    "D. Four objects.": ("D", "D", "D", "D", "D"),
    "**A**": ("A", "A", "A", "A", "A"),
    "The answer is (B).": ("B", "B", "B", "B", "B"),
    "The best answer is: C": ("C", "C", "C", "C", "C"),
    "B, because it is C": ("B", "B", "B", "B", "B"),
    "It is D": ("D", "D", "D", "D", "D"),
    "The cat sits; answer: B": ("B", "B", "B", "B", "B"),
    "None of them": (None, None, None, None, None),
    "": (None, None, None, None, None),
    # where they differ
    "A man walks a dog.": (None, "A", "A", "A", "A"),  # the article: lmms-eval reads it as option A
    "It moves to the right.": ("B", None, None, None, None),  # only SpecVLM matches an option's text
    "I think option d is best": (None, None, None, "D", None),  # MVBench lower-cases before searching
    "a": (None, None, None, "A", None),
    "E": (None, None, None, "E", "E"),  # MVBench and LongVideoBench read A-E whatever the option count
    "Answer: C": ("C", "C", "C", "C", "A"),  # LongVideoBench takes the A of "Answer"
    "Based on the video, C": ("C", "C", "C", "C", "B"),  # ... and the B of "Based"
    "Option B or option C": ("B", "C", "C", "B", "B"),  # the ranked reader prefers the letter at the end
    "(A) or (B)": ("A", "B", "B", "A", "A"),
    "c. up": ("C", None, None, "C", None),
    "e.g. the square moves up": ("C", None, None, "E", None),
}


@pytest.mark.parametrize("text", list(CASES))
def test_both_modes_on_sample_strings(text):
    expected = CASES[text]
    assert extract_answer(text, 4, OPTIONS, mode="specvlm") == extract_choice(text, 4, OPTIONS) == expected[0]
    got = tuple(extract_answer(text, 4, OPTIONS, mode="lmms-eval", benchmark=b) for b in BENCHMARKS)
    assert got == expected[1:]


def test_the_modes_differ_where_documented():
    differ = [t for t, e in CASES.items() if len(set(e)) > 1]
    assert len(differ) == 11 and len(CASES) == 22


def test_other_benchmarks_use_the_ranked_reader_over_their_own_letters():
    assert lmms_eval_choice("F", "synthetic", 6) == "F" and lmms_eval_choice("F", "synthetic", 4) is None
    assert lmms_eval_choice("F", "videomme", 6) is None  # lmms-eval's Video-MME reads A-D only
    assert lmms_eval_choice("The answer is E", "synthetic", 5) == "E"
    assert lmms_eval_choice(None, "videomme", 4) is None and lmms_eval_choice("A", "videomme", 0) is None
    with pytest.raises(ValueError, match="strict, lmms-eval"):
        extract_answer("A", 4, mode="lmms")


def test_grade_and_regrade():
    assert grade("A man walks a dog.", OPTIONS, "A", "mvbench") == (None, False)
    assert grade("A man walks a dog.", OPTIONS, "A", "mvbench", "lmms-eval") == ("A", True)
    assert grade("A man walks a dog.", OPTIONS, None, "mvbench", "lmms-eval") == ("A", None)
    row = {"status": "ok", "options": list(OPTIONS), "text": "Based on the video, C", "answer": "C",
           "benchmark": "lvb64", "prediction": "C", "correct": True}  # fmt: skip
    again = regrade([row, {"status": "error"}], "lmms-eval", {"lvb64": "longvideobench"})
    assert again[0]["prediction"] == "B" and again[0]["correct"] is False and again[0]["answer_extraction"] == "lmms-eval"
    assert again[1] == {"status": "error"} and row["prediction"] == "C"  # copies: the rows are not changed
    assert regrade(again, "lmms-eval")[0] is again[0]  # already read in that mode


def test_config_key():
    base = {"name": "t", "model": {"target": "tiny:llava_onevision"}, "benchmarks": [{"name": "synthetic"}], "methods": ["ar"]}
    assert EvalConfig.from_dict(base).answer_extraction == "strict" == EXTRACTION_MODES[0]
    cfg = EvalConfig.from_dict({**base, "answer_extraction": "lmms-eval"})
    assert cfg.to_dict()["answer_extraction"] == "lmms-eval"
    assert cfg.fingerprint() == EvalConfig.from_dict(base).fingerprint()  # accuracy only: a run may be re-read
    with pytest.raises(ConfigError, match="answer_extraction='lmms'.*strict, lmms-eval"):
        EvalConfig.from_dict({**base, "answer_extraction": "lmms"})


def _mc_rows():
    base = {"status": "ok", "prompt_mode": "benchmark", "method_name": "ar", "method": "ar", "options": list(OPTIONS),
            "token_ids": [1], "new_tokens": 1, "prefill_s": 1.0, "decode_s": 1.0, "e2e_s": 2.0, "ttft_s": 1.0,
            "target_steps": None, "committed_tokens": None, "benchmark": "mvb"}  # fmt: skip
    return [
        {**base, "key": "mvb/benchmark/0|ar", "sample_id": "0", "text": "A man walks a dog.", "answer": "A",
         "prediction": None, "correct": False},
        {**base, "key": "mvb/benchmark/1|ar", "sample_id": "1", "text": "It moves to the right.", "answer": "B",
         "prediction": "B", "correct": True},
    ]  # fmt: skip


def test_summary_grades_under_the_requested_mode():
    rows = _mc_rows()
    ours = summarize(rows, ["ar"], "specvlm", {"mvb": "mvbench"})
    theirs = summarize(rows, ["ar"], "lmms-eval", {"mvb": "mvbench"})
    assert ours["groups"]["mvb/benchmark"]["methods"]["ar"]["accuracy"] == 0.5 and ours["answer_extraction"] == "strict"
    assert theirs["groups"]["mvb/benchmark"]["methods"]["ar"]["accuracy"] == 0.5  # A right, B now unread
    assert theirs["answer_extraction"] == "lmms-eval" and any("lmms-eval" in n for n in theirs["notes"])
    assert "answer_extraction" not in summarize(rows, ["ar"])  # callers that do not ask: rows as recorded


def test_a_run_records_its_mode_and_a_summary_rereads_it(tmp_path, checkpoints):
    layouts = build_layouts(tmp_path / "data")
    cfg = {
        "name": "t",
        "model": {"target": str(checkpoints["llava_onevision"]["target"]),
                  "draft": str(checkpoints["llava_onevision"]["draft"]), "torch_dtype": "float32"},
        "generation": {"max_new_tokens": 3, "ignore_eos": True, "warmup": 0},
        "benchmarks": [{"name": "mvbench", "label": "mvb", "root": str(layouts["mvbench"])}],
        "methods": ["ar", {"name": "specvlm", "drop_rate": 0.5}],
        "answer_extraction": "lmms-eval",
    }  # fmt: skip
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    assert main([str(tmp_path / "exp.yaml"), "--output", str(out), "--no-progress", "--no-plots"]) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["status"] == "ok" and r["answer_extraction"] == "lmms-eval" for r in rows)
    for r in rows:  # graded as lmms-eval's MVBench task reads the text
        assert r["prediction"] == lmms_eval_choice(r["text"], "mvbench", len(r["options"]))
    assert json.loads((out / "summary.json").read_text())["answer_extraction"] == "lmms-eval"

    saved = yaml.safe_load((out / "config.yaml").read_text())
    (out / "config.yaml").write_text(yaml.safe_dump({**saved, "answer_extraction": "specvlm"}))
    assert main(["--summarize", str(out), "--no-plots"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["answer_extraction"] == "strict"
    expected = [r["answer"] is not None and extract_choice(r["text"], len(r["options"]), tuple(r["options"])) == r["answer"]
                for r in rows if r["method"] == "ar"]  # fmt: skip
    assert summary["groups"]["mvb/benchmark"]["methods"]["ar"]["accuracy"] == sum(expected) / len(expected)
