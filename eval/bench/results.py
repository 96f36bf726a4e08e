"""The figures of a bench run: one method's timed runs (:class:`RunResult`) and the whole report
(:class:`BenchReport`) with the ratios it derives from them (speedups, end-to-end and time-to-first-token
ratios), as a dict for ``--json``.

What this module deliberately does not do: measure (:mod:`specvlm_eval.bench.pair`, :mod:`specvlm_eval.bench.costs`) or
format text (:mod:`specvlm_eval.bench.report`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from specvlm_eval.bench.workloads import ANSWER_RUNS


@dataclass
class RunResult:
    name: str
    decode_s: float
    new_tokens: int
    tau: float | None
    identical_to_ar: bool
    divergence: dict | None = None  # specvlm.audit's classification of a run that differs from ar's tokens
    forward_s: float | None = None  # time inside model forwards during decoding
    host_syncs_per_step: float | None = None
    target_steps: int | None = None
    decode_runs_s: list[float] = field(default_factory=list)  # every timed run; ``decode_s`` is the fastest
    e2e_s: float | None = None  # prefill + decode (fastest timed run); hf-assisted: its whole generate()
    ttft_s: float | None = None  # time to first token (fastest timed run); None for hf-assisted
    answers: int | None = None  # short-answer runs: answers summed in this run
    skipped: int | None = None  # short-answer runs: answers whose lazily started draft was never prefilled
    plain_runs: int = 0  # timed runs the never-slower guard turned plain (in the answer, or by a remembered verdict)
    timed_runs: int = 0  # timed runs (answers of a short-answer run count one each)
    overlap_runs: int = 0  # timed runs whose draft drafted in a worker beside the target (``overlap``)

    @property
    def spread(self) -> float | None:
        """Slowest timed run over the fastest, minus one (run-to-run variation of the decode time)."""
        if len(self.decode_runs_s) < 2 or min(self.decode_runs_s) <= 0:
            return None
        return max(self.decode_runs_s) / min(self.decode_runs_s) - 1.0

    @property
    def overhead(self) -> float | None:
        """Share of decode time outside model forwards."""
        if self.forward_s is None or not self.decode_s:
            return None
        return max(0.0, 1.0 - self.forward_s / self.decode_s)


@dataclass
class BenchReport:
    machine: str
    settings: dict
    runs: dict[str, RunResult] = field(default_factory=dict)
    step_costs_ms: dict[str, float] = field(default_factory=dict)
    draft_over_target: dict[str, float] = field(default_factory=dict)  # per-token decode cost ratios
    step_profile_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # step -> operator group -> ms
    weight_mb: dict[str, float] = field(default_factory=dict)  # model -> MB of weights read per decode step

    def overlap_gain(self) -> tuple[float, float, float] | None:
        """Overlapped drafting's decode speedup over sequential drafting (``specvlm-overlap`` over
        ``specvlm-sequential``): the ratio of the fastest runs, and the lowest and highest ratio of any run
        of one over any run of the other (the spread); None without both runs."""
        seq, over = self.runs.get("specvlm-sequential"), self.runs.get("specvlm-overlap")
        if seq is None or over is None or not seq.decode_s or not over.decode_s:
            return None
        seq_runs, over_runs = seq.decode_runs_s or [seq.decode_s], over.decode_runs_s or [over.decode_s]
        return seq.decode_s / over.decode_s, min(seq_runs) / max(over_runs), max(seq_runs) / min(over_runs)

    def speedups(self) -> dict[str, dict[str, float]]:
        """Decode-time ratios: baseline time / run time, for baselines ``ar`` and ``hf-assisted`` (the
        short answers' baseline is ``answers:ar``)."""
        out = {}
        for base in ("ar", "hf-assisted"):
            if base in self.runs:
                ref = self.runs[base].decode_s
                out[base] = {
                    n: ref / r.decode_s
                    for n, r in self.runs.items()
                    if n != base and r.decode_s > 0 and not n.startswith("answers:")
                }
        if "answers:ar" in self.runs:
            ref = self.runs["answers:ar"].decode_s
            out["answers:ar"] = {n: ref / r.decode_s for n, r in self.runs.items() if n in ANSWER_RUNS and r.decode_s > 0}
        return out

    def over_ar(self, name: str, metric: str) -> float | None:
        """``metric`` ("e2e": ar's end-to-end time / the run's; "ttft": the run's time to first token /
        ar's) of run ``name`` against its workload's ``ar`` run; None where a time is missing."""
        base = self.runs.get("answers:ar" if name in ANSWER_RUNS else "ar")
        run = self.runs[name]
        if base is None:
            return None
        if metric == "e2e":
            return base.e2e_s / run.e2e_s if base.e2e_s and run.e2e_s else None
        return run.ttft_s / base.ttft_s if base.ttft_s and run.ttft_s is not None else None

    def to_dict(self) -> dict:
        return {
            "machine": self.machine,
            "settings": self.settings,
            "runs": {n: {**asdict(r), "overhead": r.overhead, "spread": r.spread} for n, r in self.runs.items()},
            "speedup_over": self.speedups(),
            "e2e_speedup_over_ar": {n: self.over_ar(n, "e2e") for n in self.runs},
            "ttft_over_ar": {n: self.over_ar(n, "ttft") for n in self.runs},
            "overlap_over_sequential": self.overlap_gain(),
            "step_costs_ms": self.step_costs_ms,
            "draft_over_target": self.draft_over_target,
            "step_profile_ms": self.step_profile_ms,
            "weight_mb": self.weight_mb,
        }
