"""The lean loop's host reads, and `specvlm bench` on tiny offline models (CPU)."""

from __future__ import annotations

import json

import pytest
import torch

from specvlm_eval import bench
from specvlm import SpecVLM
from specvlm.cli import main
from specvlm.decoding.trees import TreeStructure


@pytest.fixture(scope="module")
def engine(checkpoints):
    pair = checkpoints["llava_onevision"]
    return SpecVLM.from_pretrained(pair["target"], draft=pair["draft"], torch_dtype=torch.float32)


@pytest.mark.slow
@pytest.mark.parametrize("tree", ["chain", "specvlm-25", [[0], [1], [0, 0], [1, 0], [0, 0, 0]]])
@pytest.mark.parametrize("do_sample", [False, True])
def test_static_trees_read_the_host_once_per_step(engine, frames, tree, do_sample):
    inputs = engine.build_inputs(frames, "describe the video")
    result = engine.generate(inputs=inputs, max_new_tokens=24, tree=tree, do_sample=do_sample, temperature=0.8, ignore_eos=True)
    stats = result.stats
    assert stats.new_tokens == 24
    assert stats.target_steps > 0
    assert stats.host_syncs == stats.target_steps


def test_dynamic_trees_read_the_host_once_per_level(engine, frames):
    inputs = engine.build_inputs(frames, "describe the video")
    stats = engine.generate(inputs=inputs, max_new_tokens=12, tree="dynamic", tree_depth=3, ignore_eos=True).stats
    assert stats.host_syncs > stats.target_steps


def test_ignore_eos_decodes_exactly_max_new_tokens(engine, frames):
    inputs = engine.build_inputs(frames, "describe the video")
    plain = engine.generate(inputs=inputs, max_new_tokens=40, method="ar", ignore_eos=True)
    assert len(plain.token_ids) == 40
    stock = engine.target.generate(**inputs, max_new_tokens=40, do_sample=False, eos_token_id=[])
    assert plain.token_ids == stock[0, inputs["input_ids"].shape[1] :].tolist()
    # a live EOS: a token the answer holds early ends it there, unless EOS is ignored
    eos = plain.token_ids[3]
    stopped = engine.generate(inputs=inputs, max_new_tokens=40, method="ar", eos_token_id=eos)
    assert stopped.token_ids == plain.token_ids[: plain.token_ids.index(eos) + 1] and stopped.stats.stopped_by == "eos"
    ignored = engine.generate(inputs=inputs, max_new_tokens=40, method="specvlm", eos_token_id=eos, ignore_eos=True)
    assert ignored.token_ids == plain.token_ids and ignored.stats.stopped_by == "max_new_tokens"
    with pytest.raises(ValueError, match="ignore_eos"):
        engine.generate(inputs=inputs, max_new_tokens=4, ignore_eos="yes")


def test_level_widths_and_projection():
    chain = TreeStructure.of([-1, 0, 1, 2, 3])
    assert bench.level_widths(chain) == [1, 1, 1, 1, 1]
    tree = TreeStructure.of([-1, -1, 0, 0, 1, 2])  # depth 1: 2 nodes with kids; depth 2: one node with a kid
    assert bench.level_widths(tree) == [1, 2, 1]
    assert bench.project(4.0, plain_ms=10.0, verify_ms=12.0, draft_ms=8.0) == pytest.approx(2.0)


def test_fastest_keeps_every_timed_run():
    runs = [bench.RunResult(name="ar", decode_s=t, new_tokens=4, tau=1.0, identical_to_ar=True) for t in (0.5, 0.4, 0.6)]
    best = bench.fastest(runs)
    assert best is runs[1]
    assert best.decode_runs_s == [0.5, 0.4, 0.6]
    assert best.spread == pytest.approx(0.6 / 0.4 - 1)
    assert bench.fastest(runs[:1]).spread is None  # one run: no variation to report
    with pytest.raises(ValueError, match="at least one"):
        bench.fastest([])


@pytest.mark.slow
def test_bench_pair_reports_every_method(engine):
    report = bench.bench_pair(engine, max_new_tokens=12, min_video_tokens=100, repeats=2)
    assert all(len(r.decode_runs_s) == 2 and r.decode_s == min(r.decode_runs_s) for r in report.runs.values())
    caption = set(bench.RUNS) | {"hf-assisted"}  # every caption run, the self-draft's included
    assert set(report.runs) == caption | set(bench.ANSWER_RUNS)
    assert all(r.identical_to_ar for r in report.runs.values())
    assert all(report.runs[n].new_tokens == 12 for n in caption)
    assert report.runs["ar"].tau == 1.0
    assert report.runs["ar"].host_syncs_per_step == 1.0
    for name in ("ar", "sd", "specvlm-chain", "specvlm-tree"):
        run = report.runs[name]
        assert 0 < run.forward_s <= run.decode_s
        assert 0 <= run.overhead < 1
    costs = report.step_costs_ms
    assert costs["video_tokens"] >= 100
    assert costs["context_draft_pruned"] < costs["context_target"]
    chain = f"verify_chain_{engine.config.num_draft_tokens + 1}_tokens"  # the chain the engine drafts, bonus included
    assert all(costs[k] > 0 for k in ("plain_step", chain, "verify_reference-25_26_tokens", "draft_step_pruned"))
    speed = report.speedups()
    assert speed["ar"]["sd"] == pytest.approx(report.runs["ar"].decode_s / report.runs["sd"].decode_s)
    data = report.to_dict()
    json.dumps(data)
    assert set(data) == {"machine", "settings", "runs", "speedup_over", "e2e_speedup_over_ar", "ttft_over_ar", "step_costs_ms",
                         "draft_over_target", "step_profile_ms", "weight_mb", "overlap_over_sequential"}  # fmt: skip
    # the overlap rows: every timed run of one drafted in a worker, none of the other; the gain is theirs
    overlap, sequential = report.runs["specvlm-overlap"], report.runs["specvlm-sequential"]
    assert (overlap.overlap_runs, sequential.overlap_runs) == (overlap.timed_runs, 0) == (2, 0)
    fastest, low, high = data["overlap_over_sequential"]
    assert fastest == pytest.approx(sequential.decode_s / overlap.decode_s) and low <= fastest <= high
    assert data["step_profile_ms"] == {} and data["weight_mb"] == {}  # only with profile=True
    assert data["settings"]["compile"] == engine.config.compile
    assert data["settings"]["num_draft_tokens"] == engine.config.num_draft_tokens
    ratio = report.draft_over_target
    assert ratio["time"] == pytest.approx(costs["draft_step_full"] / costs["plain_step"])
    assert 0 < ratio["arithmetic"] < 1  # the embedded draft is the smaller model
    text = bench.format_report(report)
    assert "specvlm-tree" in text and "multiply-accumulates" in text
    assert f"overlapped drafting over sequential drafting (specvlm-overlap / specvlm-sequential): decode {fastest:.2f}x" in text


@pytest.mark.slow
def test_bench_pair_profile_breaks_steps_down_by_operator(engine):
    report = bench.bench_pair(engine, max_new_tokens=6, min_video_tokens=100, repeats=1, hf_assisted=False, profile=True)
    chain = f"verify_chain_{engine.config.num_draft_tokens + 1}_tokens"
    assert set(report.step_profile_ms) == {"plain_step", chain, "draft_step_pruned"}
    for groups in report.step_profile_ms.values():
        assert set(groups) == {"matmul", "attention", "other ops"}
        assert groups["matmul"] > 0 and groups["attention"] > 0 and groups["other ops"] > 0
    target = engine.target
    head = target.lm_head.weight  # counted once whether or not it shares the input embedding table
    decoder = sum(p.numel() for n, p in target.model.language_model.named_parameters() if "embed_tokens" not in n)
    assert report.weight_mb["target"] == pytest.approx((decoder + head.numel()) * 4 / 2**20)
    assert report.weight_mb["draft"] < report.weight_mb["target"]
    text = bench.format_report(report)
    assert "where a step's time goes" in text and "GB/s" in text


def test_bench_pair_interleaves_the_methods_round_by_round(engine, monkeypatch):
    """A warm-up round, then every method once per round, every other round in reverse order (a slow spell
    of the machine hits all methods alike, and no method always follows the same one); the fastest timed
    run of each counts, and one non-identical run marks the method, which is then run once more and its
    divergence classified against the target's own scores."""
    calls = []
    real_engine, real_hf = bench.run_engine, bench.run_hf_assisted

    def run_engine(engine_, inputs, name, *args):
        calls.append(name)
        run, ids = real_engine(engine_, inputs, name, *args)
        if name == "sd" and calls.count("sd") >= 2:  # after the warm-up, sd goes wrong at its second token
            ids = ids[:1] + [(ids[1] + 1) % engine_.shared_vocab] + ids[2:]
            run.identical_to_ar = False
        return run, ids

    def run_hf(*args):
        calls.append("hf-assisted")
        return real_hf(*args)

    monkeypatch.setattr("specvlm_eval.bench.pair.run_engine", run_engine)  # where bench_pair looks them up
    monkeypatch.setattr("specvlm_eval.bench.pair.run_hf_assisted", run_hf)
    report = bench.bench_pair(engine, max_new_tokens=6, min_video_tokens=100, repeats=2, workloads=("caption",))
    methods = [n for n in bench.RUNS if n not in bench.SELF_DRAFT_RUNS] + ["hf-assisted"]
    assert calls == methods * 2 + methods[::-1] + ["sd"]  # the rerun that is classified
    assert not report.runs["sd"].identical_to_ar
    assert all(report.runs[m].identical_to_ar and report.runs[m].divergence is None for m in methods if m != "sd")
    divergence = report.runs["sd"].divergence
    assert (divergence["verdict"], divergence["position"]) == ("mismatch", 1)
    assert "False (mismatch at token 1: margin" in bench.format_report(report)
    assert report.settings["generation"]["do_sample"] is False and report.settings["generation"]["eos_token_id"] is None


def test_bench_pair_runs_the_self_draft_and_short_answers_with_end_to_end_ratios(engine):
    report = bench.bench_pair(
        engine, max_new_tokens=10, min_video_tokens=100, repeats=1, hf_assisted=False, workloads=("self-draft", "answers")
    )
    assert list(report.runs) == ["ar", "self-draft", *bench.ANSWER_RUNS]
    assert all(r.identical_to_ar for r in report.runs.values())
    ar, own = report.runs["ar"], report.runs["self-draft"]
    assert own.new_tokens == ar.new_tokens == 10
    for name, run in report.runs.items():
        assert 0 < run.ttft_s <= run.e2e_s
        assert report.over_ar(name, "e2e") == pytest.approx(report.runs[_base(name)].e2e_s / run.e2e_s)
        assert report.over_ar(name, "ttft") == pytest.approx(run.ttft_s / report.runs[_base(name)].ttft_s)
    answers = report.runs["answers:specvlm"]
    assert answers.answers == report.runs["answers:ar"].answers == report.settings["answers"]["questions"] > 0
    assert 0 <= answers.skipped <= answers.answers
    assert report.speedups()["answers:ar"]["answers:specvlm"] == pytest.approx(
        report.runs["answers:ar"].decode_s / answers.decode_s
    )
    assert "answers:specvlm" not in report.speedups()["ar"]  # the answers are compared with their own ar
    text = bench.format_report(report)
    assert "short answers" in text and "e2e x ar" in text and "TTFT/ar" in text
    own_row = next(line for line in text.splitlines() if line.startswith("self-draft "))
    assert "nan" not in text and own_row.split()[6] == "-"  # no hf-assisted row: its column says so
    with pytest.raises(ValueError, match="workloads="):
        bench.bench_pair(engine, workloads=("captions",))


def _base(name: str) -> str:
    return "answers:ar" if name in bench.ANSWER_RUNS else "ar"


def test_the_command_lines_workloads_are_the_benchs():
    from specvlm.cli import _workloads

    assert _workloads(",".join(bench.WORKLOADS)) == bench.WORKLOADS


def test_decode_macs_counts_projections_mlp_attention_and_head():
    from transformers import Qwen2Config

    c = Qwen2Config(hidden_size=8, intermediate_size=12, num_hidden_layers=3, num_attention_heads=2,
                    num_key_value_heads=1, vocab_size=10)  # fmt: skip
    # per layer: q 8x8, k and v 8x4 each, o 8x8 -> 192; MLP 3 * 8 * 12 = 288; attention 2 * 8 * (5 + 1) = 96
    assert bench.decode_macs(c, context=5) == 3 * (192 + 288 + 96) + 8 * 10
    assert bench.decode_macs(c, context=6) - bench.decode_macs(c, context=5) == 3 * 2 * 8


def test_bench_shapes_on_cpu_tiny():
    out = bench.bench_shapes("tiny", "tiny", context=96, keep=0.25, tau=3.0, device="cpu", dtype=torch.float32, repeats=2,
                             chain_length=3)  # fmt: skip
    assert out["draft_context"] == 24
    costs = out["step_costs_ms"]
    assert costs["plain_step"] > 0 and costs["draft_step"] > 0
    assert "verify_chain_4_tokens" in costs and "verify_reference-25_26_tokens" in costs
    expected = bench.project(3.0, costs["plain_step"], costs["verify_chain_4_tokens"], costs["draft_chain"])
    assert out["projected_speedup"]["chain"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="unknown shape"):
        bench.build_text_model("qwen9", "cpu", torch.float32)
    with pytest.raises(ValueError, match="keep"):
        bench.bench_shapes("tiny", "tiny", keep=0.0, device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a GPU")
def test_cli_bench_cuda_without_gpu(capsys):
    assert main(["bench", "--device", "cuda"]) == 2
    assert "CUDA" in capsys.readouterr().err


def test_hf_assisted_proposes_the_engines_chain_length(checkpoints):
    """The bench's assisted-generation baseline drafts as many tokens per step as the engine's chain,
    and leaves the draft's generation config as it found it."""
    pair = checkpoints["llava_onevision"]
    engine = SpecVLM.from_pretrained(pair["target"], draft=pair["draft"], torch_dtype=torch.float32, num_draft_tokens=3)
    _, inputs = bench.bench_sample(engine, 100, 1 << 30)
    seen = []
    target, gc = engine.target, engine.draft.generation_config
    before = (gc.num_assistant_tokens, gc.num_assistant_tokens_schedule)
    real = target.generate

    def spy(*args, **kwargs):
        if "assistant_model" in kwargs:
            seen.append((gc.num_assistant_tokens, gc.num_assistant_tokens_schedule))
        return real(*args, **kwargs)

    target.generate = spy
    try:
        run = bench.run_hf_assisted(engine, inputs, 4, None)
    finally:
        del target.generate
    assert seen == [(3, "constant")]
    assert run.new_tokens == 4
    assert (gc.num_assistant_tokens, gc.num_assistant_tokens_schedule) == before


def test_cli_bench_rejects_a_bad_chain_length(capsys, checkpoints):
    pair = checkpoints["llava_onevision"]
    assert main(["bench", "--target", str(pair["target"]), "--draft", str(pair["draft"]), "--num-draft-tokens", "0"]) == 2
    assert "num_draft_tokens=0" in capsys.readouterr().err


def test_cli_bench_needs_both_checkpoints(capsys, checkpoints):
    assert main(["bench", "--target", str(checkpoints["llava_onevision"]["target"])]) == 2
    assert "--draft" in capsys.readouterr().err


@pytest.mark.cuda
def test_bench_shapes_cuda_small():
    out = bench.bench_shapes("tiny", "tiny", context=2048, device="cuda", dtype=torch.bfloat16, repeats=3)
    assert out["verify_tree_over_plain"] > 0


@pytest.mark.parametrize(
    ("shape", "layers", "params_b", "tied"),
    [("qwen2-7b", 28, 7.6, False), ("qwen2-0.5b", 24, 0.49, True), ("qwen3-32b", 64, 32.8, False),
     ("qwen3-8b", 36, 8.2, False), ("qwen3-2b", 28, 1.7, True), ("qwen3-0.6b", 28, 0.6, True)],
)  # fmt: skip
def test_real_shapes_build_the_families_text_decoders(shape, layers, params_b, tied):
    """The cuda bench's shapes are the real checkpoints' text decoders (built on the meta device: no memory);
    the bench always gives them a separate output head, which the small real checkpoints share with the
    input embedding."""
    model = bench.build_text_model(shape, "meta", torch.bfloat16)
    family = "Qwen3" if shape.startswith("qwen3") else "Qwen2"
    assert type(model).__name__ == f"{family}ForCausalLM" and model.config.num_hidden_layers == layers
    params = sum(p.numel() for p in model.parameters()) - (model.lm_head.weight.numel() if tied else 0)
    assert params / 1e9 == pytest.approx(params_b, rel=0.05)
