"""Metrics over result rows: peak memory, agreement with ``ar``, and aggregation per method.

Every metric (tau and tau - 1, prefill / decode / E2E, TTFT, TPOT, tokens/s, decode and e2e speedup
total over total and per-sample mean, lossless, draft KV fraction, peak memory, accuracy via
:func:`grade` under the configured ``answer_extraction`` mode, the ``hf-assisted`` caveat) is defined once, in docs/evaluation.md ("Metric
definitions"); this module computes them as defined there.

What this module deliberately does not do: run models, read files or draw.
"""

from __future__ import annotations

import math
import resource
import sys
from collections import defaultdict

import torch

from specvlm.answers import EXTRACTION_MODES, canonical_mode, extract_answer, extract_choice  # noqa: F401  (the accuracy metric's extractors, re-exported)

HF_ASSISTED_NOTE = (
    "hf-assisted is timed as one transformers generate() call: its prefill/decode split (and so TTFT, TPOT, "
    "decode speedup) and its acceptance (tau) are not observable; only end-to-end metrics are reported."
)
CPU_MEMORY_NOTE = "peak memory on CPU is the process's peak resident set size so far (it never decreases)."
UNGRADED_NOTE = (
    "{n} sample(s) have a gold answer that matches none of their options (see answer_issue in results.jsonl): "
    "they run and count for speed and agreement, but not for accuracy (the official MLVU script counts them wrong)."
)

LMMS_EVAL_EXTRACTION_NOTE = (
    "accuracy reads answers as lmms-eval 0.7.3's task for each benchmark does (answer_extraction: lmms-eval; "
    "docs/evaluation.md, 'Answer extraction'); the prompts are still specvlm-eval's."
)


def grade(text, options, answer: str | None, benchmark: str | None, mode: str = EXTRACTION_MODES[0]) -> tuple[str | None, bool | None]:
    """(prediction, correct) of one multiple-choice answer under an ``answer_extraction`` mode.

    ``benchmark`` is the benchmark's name (``videomme``, ...; the lmms-eval mode reads each its own way);
    ``correct`` is ``None`` when the sample has no gold letter (it is left out of accuracy).
    """
    options = tuple(options or ())
    prediction = extract_answer(text, len(options), options, mode=mode, benchmark=benchmark)
    return prediction, (None if answer is None else prediction == answer)


def regrade(rows: list[dict], mode: str, names: dict[str, str] | None = None) -> list[dict]:
    """Rows whose prediction was read under another extraction mode, read again under ``mode`` (copies).

    A row records its mode in ``answer_extraction`` (absent: ``strict``; the old spelling ``specvlm`` is
    ``strict`` too); ``names`` maps a row's
    benchmark label to the benchmark's name (default: the label). Rows already in ``mode``, error rows
    and rows without options are returned as they are.
    """
    names = names or {}
    mode = canonical_mode(mode)
    out = []
    for r in rows:
        if r.get("status") != "ok" or not r.get("options") or canonical_mode(r.get("answer_extraction", EXTRACTION_MODES[0])) == mode:
            out.append(r)
            continue
        prediction, correct = grade(r.get("text"), r["options"], r.get("answer"), names.get(r.get("benchmark"), r.get("benchmark")), mode)
        out.append({**r, "prediction": prediction, "correct": correct, "answer_extraction": mode})
    return out


def first_divergence(reference: list[int], ids: list[int]) -> int | None:
    """``None`` if identical, else the first position where they differ (or the shorter length)."""
    for i, (a, b) in enumerate(zip(reference, ids)):
        if a != b:
            return i
    return None if len(reference) == len(ids) else min(len(reference), len(ids))


# --------------------------------------------------------------------------- memory


class PeakMemory:
    """Peak memory of one generation: CUDA max allocated (reset at the start), else process peak RSS."""

    def __init__(self, devices):
        self.cuda = sorted({d.index or 0 for d in devices if getattr(d, "type", None) == "cuda"})
        self.bytes: int | None = None
        self.kind = "cuda_max_allocated" if self.cuda else "cpu_peak_rss"

    def __enter__(self) -> "PeakMemory":
        for i in self.cuda:
            torch.cuda.reset_peak_memory_stats(i)
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            self.bytes = int(sum(torch.cuda.max_memory_allocated(i) for i in self.cuda))
        else:
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.bytes = int(rss if sys.platform == "darwin" else rss * 1024)  # bytes on macOS, KiB on Linux


# --------------------------------------------------------------------------- aggregation


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _num(row: dict, key: str) -> float | None:
    v = row.get(key)
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def summarize_method(rows: list[dict], baseline: dict[str, dict]) -> dict:
    """Aggregate one method's rows in one group; ``baseline`` maps sample_id -> the ``ar`` row."""
    ok = [r for r in rows if r.get("status") == "ok"]
    out: dict = {"method_name": rows[0].get("method_name"), "settings": rows[0].get("settings") or {},
                 "rows": len(rows), "ok": len(ok), "errors": len(rows) - len(ok)}
    new_tokens = sum(r["new_tokens"] for r in ok)
    out["new_tokens_total"] = new_tokens
    steps = sum(r.get("target_steps") or 0 for r in ok if r.get("target_steps") is not None)
    committed = sum(r.get("committed_tokens") or 0 for r in ok if r.get("target_steps") is not None)
    out["tau"] = _ratio(committed, steps)
    out["tau_minus_1"] = None if out["tau"] is None else out["tau"] - 1.0
    split = [r for r in ok if _num(r, "decode_s") is not None]
    out["prefill_s_total"] = sum(r["prefill_s"] for r in split) if split else None
    out["decode_s_total"] = sum(r["decode_s"] for r in split) if split else None
    e2e = sum(r["e2e_s"] for r in ok)
    out["e2e_s_total"] = e2e if ok else None
    out["ttft_s_mean"] = _mean([r["ttft_s"] for r in split])
    out["tpot_s"] = _ratio(sum(r["decode_s"] for r in split), sum(max(r["new_tokens"] - 1, 0) for r in split)) if split else None
    out["tokens_per_s"] = _ratio(new_tokens, e2e) if ok else None
    kv = [r["draft_kv_fraction"] for r in ok if _num(r, "draft_kv_fraction") is not None]
    out["draft_kv_fraction_mean"] = _mean(kv)
    out["kept_visual_tokens_mean"] = _mean([r["kept_visual_tokens"] for r in ok if _num(r, "kept_visual_tokens") is not None])
    out["visual_tokens_mean"] = _mean([r["visual_tokens"] for r in ok if _num(r, "visual_tokens") is not None])
    mem = [r["peak_memory_bytes"] for r in ok if _num(r, "peak_memory_bytes") is not None]
    out["peak_memory_bytes_max"] = max(mem) if mem else None

    # speedup and agreement against ar on the same sample
    pairs, mismatched, divergences, identical, compared = [], 0, [], 0, 0
    for r in ok:
        base = baseline.get(r["sample_id"])
        if base is None or base.get("status") != "ok":
            continue
        compared += 1
        pos = first_divergence(base["token_ids"], r["token_ids"])
        if pos is None:
            identical += 1
        else:
            verdict = r.get("divergence") or {}
            divergences.append({
                "sample_id": r["sample_id"], "first_diverging_position": pos,
                "verdict": verdict.get("verdict"), "margin": verdict.get("margin"), "tolerance": verdict.get("tolerance"),
            })  # fmt: skip
        if base["new_tokens"] == r["new_tokens"]:
            pairs.append((base, r))
        else:
            mismatched += 1
    out["agreement_pairs"] = compared
    out["lossless_rate"] = _ratio(identical, compared)
    out["near_ties"] = sum(1 for d in divergences if d["verdict"] == "near-tie")
    out["mismatches"] = sum(1 for d in divergences if d["verdict"] == "mismatch")
    out["divergences"] = divergences
    out["speedup_pairs"] = len(pairs)
    out["speedup_pairs_skipped_token_mismatch"] = mismatched
    for kind in ("decode", "e2e"):
        usable = [(b, r) for b, r in pairs if _num(r, f"{kind}_s") and _num(b, f"{kind}_s") is not None]
        out[f"{kind}_speedup_total"] = (
            _ratio(sum(b[f"{kind}_s"] for b, _ in usable), sum(r[f"{kind}_s"] for _, r in usable)) if usable else None
        )
        out[f"{kind}_speedup_mean"] = _mean([b[f"{kind}_s"] / r[f"{kind}_s"] for b, r in usable])

    graded = [r for r in ok if r.get("answer") is not None]
    out["accuracy_n"] = len(graded)
    out["ungraded"] = sum(1 for r in ok if r.get("answer_issue"))  # gold answer matches none of the options
    out["accuracy"] = _ratio(sum(bool(r.get("correct")) for r in graded), len(graded)) if graded else None
    return out


def summarize(rows: list[dict], method_order: list[str] | None = None, answer_extraction: str | None = None,
              benchmark_names: dict[str, str] | None = None) -> dict:  # fmt: skip
    """``{"groups": {"<benchmark>/<mode>": {"samples", "methods": {key: metrics}}}, "errors": ..., "notes": [...]}``.

    With ``answer_extraction`` every row is graded under that mode (rows written under the other are
    read again, see :func:`regrade`) and the summary records it.
    """
    answer_extraction = canonical_mode(answer_extraction)
    if answer_extraction is not None:
        rows = regrade(rows, answer_extraction, benchmark_names)
    by_group: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_group[f"{r['benchmark']}/{r['prompt_mode']}"][r["method"]].append(r)
    order = {m: i for i, m in enumerate(method_order or [])}
    groups = {}
    for group, methods in by_group.items():
        baseline = {r["sample_id"]: r for r in methods.get("ar", [])}
        keys = sorted(methods, key=lambda m: (order.get(m, len(order)), m))
        samples = {r["sample_id"] for rs in methods.values() for r in rs}
        groups[group] = {"samples": len(samples), "methods": {m: summarize_method(methods[m], baseline) for m in keys}}
    errors = [r for r in rows if r.get("status") != "ok"]
    by_method: dict[str, int] = defaultdict(int)
    for r in errors:
        by_method[r["method"]] += 1
    notes = []
    if any(r.get("method_name") == "hf-assisted" for r in rows):
        notes.append(HF_ASSISTED_NOTE)
    if any(r.get("peak_memory_kind") == "cpu_peak_rss" for r in rows):
        notes.append(CPU_MEMORY_NOTE)
    ungraded = {(r["benchmark"], r["prompt_mode"], r["sample_id"]) for r in rows if r.get("answer_issue")}
    if ungraded:
        notes.append(UNGRADED_NOTE.format(n=len(ungraded)))
    if answer_extraction == "lmms-eval":
        notes.append(LMMS_EVAL_EXTRACTION_NOTE)
    return {
        "rows": len(rows),
        **({"answer_extraction": answer_extraction} if answer_extraction is not None else {}),
        "groups": groups,
        "errors": {
            "rows": len(errors),
            "samples": len({(r["benchmark"], r["prompt_mode"], r["sample_id"]) for r in errors}),
            "by_method": dict(by_method),
            "examples": [{"key": r["key"], "error": r.get("error")} for r in errors[:20]],
        },
        "notes": notes,
    }
