"""The text report of ``specvlm bench``: the machine's description, the methods' table, the short answers'
table, the per-step costs, the operator profile and the weights read per step.

What this module deliberately does not do: compute a figure (:class:`specvlm_eval.bench.results.BenchReport` derives
the ratios) or write files (the command line does).
"""

from __future__ import annotations

import json

import torch

from specvlm_eval.bench.results import BenchReport, RunResult
from specvlm_eval.bench.workloads import ANSWER_RUNS


def machine_description(device: torch.device) -> str:
    import os
    import platform

    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"

def _verdict(run: RunResult) -> str:
    """The identical column: True, or False with the divergence's class (a mismatch is a bug) and margin."""
    if run.identical_to_ar:
        return "True"
    d = run.divergence or {}
    verdict = d.get("verdict", "unclassified")
    if d.get("margin") is None:
        return f"False ({verdict})"
    return f"False ({verdict} at token {d['position']}: margin {d['margin']:.3g}, tolerance {d['tolerance']:.3g})"


def format_report(report: BenchReport) -> str:
    lines = [f"machine: {report.machine}", f"settings: {json.dumps(report.settings)}", ""]
    if report.settings.get("contention"):
        lines.insert(2, f"contention: {report.settings['contention']} CPU-bound processes ran beside every timed run")
    lines.append("plain: timed runs the never-slower guard decoded plainly (fell back in the answer, or a remembered verdict)")
    lines.append(
        "overlap: timed runs whose draft drafted in a worker beside the target (overlap='auto' decides per workload; "
        f"{report.settings.get('settle_answers', 0)} untimed answers let it decide before the timed rounds)"
    )
    lines.append(
        f"{'method':<19}{'decode s':>10}{'spread':>8}{'tokens':>8}{'tau':>7}{'x ar':>8}{'x hf':>8}{'e2e x ar':>10}"
        f"{'TTFT/ar':>9}{'overhead':>10}{'syncs/step':>12}{'plain':>7}{'overlap':>9}  identical"
    )
    speed = report.speedups()

    def ratio(value) -> str:
        return f"{value:.2f}" if value is not None else "-"

    for name, r in report.runs.items():
        if name in ANSWER_RUNS:
            continue
        over_ar = speed.get("ar", {}).get(name, 1.0 if name == "ar" else None)
        over_hf = speed.get("hf-assisted", {}).get(name, 1.0 if name == "hf-assisted" else None)  # None: no such row
        tau = f"{r.tau:.2f}" if r.tau is not None else "-"
        overhead = f"{100 * r.overhead:.1f}%" if r.overhead is not None else "-"
        syncs = f"{r.host_syncs_per_step:.2f}" if r.host_syncs_per_step is not None else "-"
        spread = f"+{100 * r.spread:.0f}%" if r.spread is not None else "-"
        lines.append(
            f"{name:<19}{r.decode_s:>10.3f}{spread:>8}{r.new_tokens:>8}{tau:>7}{ratio(over_ar):>8}{ratio(over_hf):>8}"
            f"{ratio(report.over_ar(name, 'e2e')):>10}{ratio(report.over_ar(name, 'ttft')):>9}{overhead:>10}{syncs:>12}"
            f"{f'{r.plain_runs}/{r.timed_runs}':>7}{f'{r.overlap_runs}/{r.timed_runs}':>9}  {_verdict(r)}"
        )
    gain = report.overlap_gain()
    if gain is not None:
        lines.append(
            f"overlapped drafting over sequential drafting (specvlm-overlap / specvlm-sequential): decode {gain[0]:.2f}x "
            f"(fastest runs; any run over any run: {gain[1]:.2f}-{gain[2]:.2f}x)"
        )
    answers = [name for name in report.runs if name in ANSWER_RUNS]
    if answers:
        lines.append("")
        lines.append(
            f"short answers ({report.runs[answers[0]].answers} multiple-choice questions about the same video, EOS on; "
            "times summed over the answers):"
        )
        lines.append(f"{'method':<20}{'e2e s':>8}{'TTFT s':>8}{'decode s':>10}{'tokens':>8}{'e2e x ar':>10}{'TTFT/ar':>9}{'decode x ar':>13}{'draft skipped':>15}  identical")
        for name in answers:
            r = report.runs[name]
            decode = report.runs["answers:ar"].decode_s / r.decode_s if "answers:ar" in report.runs and r.decode_s else None
            lines.append(
                f"{name:<20}{r.e2e_s:>8.3f}{r.ttft_s:>8.3f}{r.decode_s:>10.3f}{r.new_tokens:>8}{ratio(report.over_ar(name, 'e2e')):>10}"
                f"{ratio(report.over_ar(name, 'ttft')):>9}{ratio(decode):>13}{f'{r.skipped}/{r.answers}':>15}  {r.identical_to_ar}"
            )
    lines.append("")
    lines.append("per-step costs (ms, medians): " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in report.step_costs_ms.items()))
    if report.draft_over_target:
        ratio = report.draft_over_target
        lines.append(
            f"draft decode step / target decode step at the target's context: {100 * ratio['time']:.0f}% of the time, "
            f"{100 * ratio['arithmetic']:.1f}% of the multiply-accumulates"
        )
    if report.step_profile_ms:
        lines.append("where a step's time goes (ms per forward, operators' self time under torch.profiler):")
        for step, groups in report.step_profile_ms.items():
            total = sum(groups.values())
            parts = ", ".join(f"{g} {ms:.2f} ({100 * ms / total:.0f}%)" for g, ms in groups.items())
            lines.append(f"  {step}: {parts}")
    if report.weight_mb:
        text = ", ".join(f"{m} {mb:.1f} MB" for m, mb in report.weight_mb.items())
        plain = report.step_profile_ms.get("plain_step", {}).get("matmul")
        if plain and "target" in report.weight_mb:
            rate = report.weight_mb["target"] * 2**20 / (plain / 1e3) / 1e9
            text += f" (the target's, over its plain step's matmul time: {rate:.1f} GB/s)"
        lines.append("weights read per decode step: " + text)
    return "\n".join(lines)
