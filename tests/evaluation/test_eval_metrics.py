"""Metric definitions on hand-made rows: letter extraction, agreement, speedups, tau, errors; results I/O."""

from __future__ import annotations

import json

import pytest

from specvlm_eval import results
from specvlm_eval.metrics import extract_choice, first_divergence, summarize


@pytest.mark.parametrize(
    "text,expected",
    [
        ("B", "B"),
        ("B .", "B"),  # the synthetic language puts punctuation after a space
        ("(C) the red one", "C"),
        ("D. Four objects.", "D"),
        ("**A**", "A"),
        ("The answer is (B).", "B"),
        ("Answer: C", "C"),
        ("I think option d is best", None),  # lower-case letters are words, not choices
        ("A man walks a dog; the correct choice is D", "D"),
        ("A man walks a dog.", None),  # the article is not a choice
        ("It moves to the right.", "B"),  # falls back to matching exactly one option text
        ("E", None),  # not a valid letter for four options
        ("", None),
    ],
)
def test_extract_choice(text, expected):
    assert extract_choice(text, 4, ("left", "right", "up", "down")) == expected


def test_first_divergence():
    assert first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert first_divergence([1, 2, 3], [1, 5, 3]) == 1
    assert first_divergence([1, 2, 3], [1, 2]) == 2


def _row(sample, method, decode, prefill, ids, steps=None, committed=None, answer=None, correct=None, **kw):
    name = method.split("[")[0]
    return {
        "key": f"b/benchmark/{sample}|{method}", "benchmark": "b", "prompt_mode": "benchmark", "sample_id": sample,
        "method": method, "method_name": name, "settings": kw.pop("settings", {}), "status": "ok",
        "token_ids": ids, "new_tokens": len(ids), "prefill_s": prefill, "decode_s": decode,
        "e2e_s": (prefill or 0) + (decode or 0) if decode is not None else kw.pop("e2e_s"),
        "ttft_s": prefill, "target_steps": steps, "committed_tokens": committed, "answer": answer, "correct": correct,
        "draft_kv_fraction": kw.pop("kv", None), **kw,
    }  # fmt: skip


def test_summary_speedups_tau_agreement_accuracy_errors():
    rows = [
        _row("s0", "ar", 4.0, 1.0, [1, 2, 3, 4, 5], steps=4, committed=4, answer="A", correct=True),
        _row("s1", "ar", 2.0, 1.0, [1, 2, 3], steps=2, committed=2, answer="B", correct=False),
        _row("s0", "sd", 1.0, 1.0, [1, 2, 3, 4, 5], steps=1, committed=4, answer="A", correct=True, kv=1.0),
        {**_row("s1", "sd", 1.0, 1.0, [1, 2, 9], steps=1, committed=2, answer="B", correct=False, kv=1.0),
         "divergence": {"verdict": "near-tie", "position": 2, "margin": 0.03, "tolerance": 0.125}},
        _row("s0", "hf-assisted", None, None, [1, 2, 3, 4, 5], e2e_s=2.5),
        {**_row("s1", "hf-assisted", None, None, [], e2e_s=0.0), "status": "error", "error": "ValueError: nope"},
    ]
    summary = summarize(rows, ["ar", "sd", "hf-assisted"])
    g = summary["groups"]["b/benchmark"]
    assert g["samples"] == 2 and list(g["methods"]) == ["ar", "sd", "hf-assisted"]
    ar, sd, hf = g["methods"]["ar"], g["methods"]["sd"], g["methods"]["hf-assisted"]
    assert ar["tau"] == 1.0 and ar["decode_speedup_total"] == 1.0 and ar["lossless_rate"] == 1.0
    assert sd["tau"] == pytest.approx(6 / 2) and sd["tau_minus_1"] == pytest.approx(2.0)  # total committed / total steps
    assert sd["decode_speedup_total"] == pytest.approx(6.0 / 2.0)  # total over total
    assert sd["decode_speedup_mean"] == pytest.approx((4.0 + 2.0) / 2)  # per-sample mean
    assert sd["e2e_speedup_total"] == pytest.approx(8.0 / 4.0)
    assert sd["lossless_rate"] == 0.5 and (sd["near_ties"], sd["mismatches"]) == (1, 0)
    assert sd["divergences"] == [
        {"sample_id": "s1", "first_diverging_position": 2, "verdict": "near-tie", "margin": 0.03, "tolerance": 0.125}
    ]
    assert sd["accuracy"] == 0.5 and sd["accuracy_n"] == 2 and sd["draft_kv_fraction_mean"] == 1.0
    assert sd["tpot_s"] == pytest.approx(2.0 / (4 + 2)) and sd["ttft_s_mean"] == 1.0
    assert hf["ok"] == 1 and hf["errors"] == 1 and hf["tau"] is None and hf["decode_speedup_total"] is None
    assert hf["e2e_speedup_total"] == pytest.approx(5.0 / 2.5) and hf["ttft_s_mean"] is None
    assert summary["errors"]["rows"] == 1 and summary["errors"]["by_method"] == {"hf-assisted": 1}
    assert any("not observable" in n for n in summary["notes"])


def test_speedup_skips_pairs_with_different_token_counts():
    rows = [_row("s0", "ar", 4.0, 1.0, [1, 2, 3]), _row("s0", "sd", 1.0, 1.0, [1, 2])]
    sd = summarize(rows)["groups"]["b/benchmark"]["methods"]["sd"]
    assert sd["speedup_pairs"] == 0 and sd["speedup_pairs_skipped_token_mismatch"] == 1
    assert sd["decode_speedup_total"] is None and sd["lossless_rate"] == 0.0


def test_rows_survive_torn_lines_and_merge_deterministically(tmp_path):
    path = tmp_path / results.RESULTS
    with results.RowWriter(path) as w:
        for k in ("a|ar", "b|ar"):
            w.write({"key": k, "status": "ok"})
    with open(path, "a") as fh:
        fh.write('{"key": "c|ar", "sta')  # a crash mid-write
    assert [r["key"] for r in results.read_rows(path)] == ["a|ar", "b|ar"]
    with results.RowWriter(path) as w:  # reopening drops the torn line first
        w.write({"key": "c|ar", "status": "ok"})
    assert [json.loads(line)["key"] for line in path.read_text().splitlines()] == ["a|ar", "b|ar", "c|ar"]
    shard = results.writer_path(tmp_path, 1, 2)
    with results.RowWriter(shard) as w:
        w.write({"key": "a|ar", "status": "error"})  # a later row for the same key wins
        w.write({"key": "0|ar", "status": "ok"})
    assert results.finished_keys(tmp_path) == {"a|ar", "b|ar", "c|ar", "0|ar"}
    assert results.finished_keys(tmp_path, retry_errors=True) == {"b|ar", "c|ar", "0|ar"}
    merged = results.merge(tmp_path, order=lambda r: r["key"])
    assert [r["key"] for r in merged] == ["0|ar", "a|ar", "b|ar", "c|ar"] and merged[1]["status"] == "error"
    assert not shard.exists() and [r["key"] for r in results.read_rows(path)] == [r["key"] for r in merged]
