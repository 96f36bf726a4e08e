"""Run a benchmark x method matrix: lock, resume, shard, generate, record, merge, summarise.

The output directory is checked first (it must be, or be creatable as, a writable directory) and
locked for the run (:class:`specvlm_eval.results.RunLock`: a second run or ``--summarize`` of it is refused
while this one runs). For every sample this rank's group owns (round-robin over the deterministic sample
list; a group is one rank, or with ``--tp T`` the T ranks that share one sharded target, see
:mod:`specvlm_eval.distributed`) the video is decoded and processed once, then every pending method runs on those
same inputs (``ar`` first), and each (sample, method) result is appended to disk immediately, by the
group's first rank only. Every row records what produced it: its prompt, options, gold answer, the frame
sampling, the model and the effective generation settings (eval's greedy call merged with the checkpoint's
generation config).

Rows already on disk are skipped, so rerunning the same command resumes; those rows must have been
produced with the same settings (compared with ``config.yaml`` and with what each row records, so a
directory without ``config.yaml`` is protected too). A malformed annotation row, a missing or
undecodable video, an ``hf-assisted`` setup that transformers cannot run, a per-sample ``ValueError``
from the engine (e.g. context overflow) or a CUDA out-of-memory becomes an error row with the reason,
and the run goes on. Warm-up runs (each method kind, on the first pending sample) precede timing and
are not recorded.

At the end (after a barrier when there are several ranks) rank 0 merges the shards into
``results.jsonl``, writes ``summary.json`` / ``summary.md`` and the plots.

What this module deliberately does not do: parse command lines or print (the CLI renders the
summary), or retry failures by itself (``retry_errors`` reruns error rows on request).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import platform
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from specvlm_eval import datasets, distributed, metrics, models, report, results
from specvlm_eval.config import BenchmarkConfig, ConfigError, EvalConfig, MethodSpec, fingerprint_conflicts, load_yaml, save_config
from specvlm_eval.datasets import AnnotationError, Sample
from specvlm_eval.methods import SAMPLING_ONLY, MethodUnavailable, generation_settings, run_method

logger = logging.getLogger(__name__)


@dataclass
class RunOutcome:
    """What a rank did; ``summary`` / ``rows`` only on rank 0."""

    output: Path
    rank: int
    world_size: int
    written: int
    skipped: int
    rows: list[dict] | None = None
    summary: dict | None = None


# --------------------------------------------------------------------------- the output directory


def prepare_output(output: Path) -> Path:
    """Create ``output`` if needed; a ConfigError (one line) if it is a file, lies under a file or is not writable."""
    if output.exists() and not output.is_dir():
        raise ConfigError(f"output {str(output)!r} is an existing file, not a directory; choose a directory")
    for parent in output.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"output {str(output)!r} cannot be created: {str(parent)!r} is a file, not a directory")
            break
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"output {str(output)!r} cannot be created: {err.strerror or err}") from None
    probe = output / f".specvlm-write-check-{os.getpid()}"
    try:  # a file actually written: os.access says yes to root even on a read-only mount
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise ConfigError(
            f"output directory {str(output)!r} is not writable ({err.strerror or err}); choose a writable directory"
        ) from None
    return output


def _lock(output: Path, purpose: str) -> results.RunLock:
    try:
        return results.RunLock(output, purpose).acquire()
    except OSError as err:
        if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise ConfigError(
                f"output directory {str(output)!r} is not writable ({err.strerror}); choose a writable directory"
            ) from None
        raise


def _lock_all_ranks(rank, output: Path) -> results.RunLock | None:
    """Rank 0 locks the directory; every rank learns whether it did (and stops with the same error if not)."""
    lock, failure = None, None
    if rank.is_main:
        try:
            lock = _lock(output, "run")
        except ValueError as err:
            failure = (type(err).__name__, str(err))
    if rank.distributed:
        import torch.distributed as dist

        box = [failure]
        dist.broadcast_object_list(box, src=0)
        failure = box[0]
    if failure is not None:
        kind, message = failure
        raise (results.DirectoryLocked if kind == "DirectoryLocked" else ConfigError)(message)
    return lock


# --------------------------------------------------------------------------- what a row records


def check_resumable(config: EvalConfig, output: Path) -> None:
    """Refuse to mix rows of a different experiment into ``output`` (names the settings that differ)."""
    saved_path = output / "config.yaml"
    if not saved_path.is_file() or not results.result_files(output):
        return
    try:
        saved = EvalConfig.from_dict(load_yaml(saved_path)).fingerprint()
    except ConfigError as err:
        raise ConfigError(f"{saved_path} is not a valid saved config ({err}); use another --output") from err
    diffs = fingerprint_conflicts(saved, config.fingerprint())
    if diffs:
        raise ConfigError(
            f"{output} holds results of a different experiment ({'; '.join(diffs[:3])}); "
            "use another --output or remove that directory"
        )


def model_record(config: EvalConfig) -> dict:
    """The model settings a row records (the device map does not change outputs)."""
    m = config.model
    return {"target": m.target, "draft": m.draft, "torch_dtype": m.torch_dtype, "attn_backend": m.attn_backend,
            "compile": m.compile}  # fmt: skip


def sampling_record(bench: BenchmarkConfig) -> dict:
    """How a benchmark's frames are sampled (the row adds its own bounds)."""
    return {"num_frames": bench.num_frames, "fps": bench.fps, "max_frames": bench.max_frames,
            "apply_bounds": bench.apply_bounds}  # fmt: skip


def sample_record(sample: Sample) -> dict:
    """What a row records about its sample: the prompt, options and gold answer as asked and graded."""
    return {
        "prompt": sample.prompt,
        "options": list(sample.options),
        "answer": sample.answer,
        "answer_text": sample.answer_text,
        "answer_issue": sample.answer_issue,
        "reference": sample.reference,
        "bounds": list(sample.bounds) if sample.bounds is not None else None,
    }


def _plain(value):
    return json.loads(json.dumps(value))


def _generation_view(g: dict) -> dict:
    """The generation settings that can change outputs (sampling-only ones drop out when greedy)."""
    if g.get("do_sample") is False:
        return {k: v for k, v in g.items() if k not in SAMPLING_ONLY}
    return g


def _differences(recorded, expected, where: str) -> list[str]:
    """``where.key: recorded X, now Y`` for every difference; dicts compared over the keys both have."""
    if isinstance(recorded, dict) and isinstance(expected, dict):
        out = []
        for k in expected:
            if k in recorded:
                out += _differences(recorded[k], expected[k], f"{where}.{k}")
        return out
    return [] if _plain(recorded) == _plain(expected) else [f"{where}: recorded {recorded!r}, now {expected!r}"]


def check_recorded(output: Path, rows: dict[str, dict], samples: dict[str, Sample], benches: dict, model: dict,
                   generation: dict) -> None:  # fmt: skip
    """Refuse to resume when a kept row was produced with other settings than this run's (names the first).

    ``generation`` may hold only some settings (those known before the models load). Rows written
    before a field was recorded are not compared on it.
    """
    for key, row in rows.items():
        pairs = []  # (field, recorded, expected), only for what the row records
        if "model" in row:
            pairs.append(("model", row["model"], model))
        if "generation" in row:
            pairs.append(("generation", _generation_view(row["generation"] or {}), _generation_view(generation)))
        bench = benches.get(row.get("benchmark"))
        if bench is not None and "video_sampling" in row:
            pairs.append(("video_sampling", row["video_sampling"], sampling_record(bench)))
        sample = samples.get(key.split("|", 1)[0])
        if sample is not None and sample.error is None and row.get("status") == "ok":
            now = sample_record(sample)
            pairs += [(f, row[f], now[f]) for f in ("prompt", "options", "answer", "bounds") if f in row]
        diffs = [d for field, got, want in pairs for d in _differences(got, want, field)]
        if diffs:
            raise ConfigError(
                f"{output} holds row {key!r} produced with other settings ({'; '.join(diffs[:3])}); "
                "use another --output, or rerun with the settings that produced it"
            )


def _inputs(engine, sample: Sample, bench) -> tuple[object, int]:
    """Processed inputs for one sample (decoded once, shared by every method) and the frame count."""
    clip = datasets.load_clip(sample, num_frames=bench.num_frames, fps=bench.fps, max_frames=bench.max_frames)
    return engine.build_inputs(clip, sample.prompt), clip.num_frames


def _base_row(sample: Sample, spec: MethodSpec, rank: int, context: dict) -> dict:
    return {
        "key": results.row_key(sample.key, spec.key),
        "benchmark": sample.benchmark,
        "prompt_mode": sample.prompt_mode,
        "sample_id": sample.sample_id,
        "task": sample.task,
        "video": sample.video,
        "method": spec.key,
        "method_name": spec.name,
        "settings": spec.options,
        **sample_record(sample),
        "video_sampling": context["sampling"][sample.benchmark],
        "model": context["model"],
        "generation": context["generation"],
        "rank": rank,
        "time": time.time(),
    }


def _error_row(sample: Sample, spec: MethodSpec, rank: int, err: BaseException, context: dict) -> dict:
    row = _base_row(sample, spec, rank, context)
    row.update(status="error", error=f"{type(err).__name__}: {err}", error_type=type(err).__name__)
    logger.warning("%s: error row: %s", row["key"], row["error"])
    return row


def _run_one(engine, spec: MethodSpec, sample: Sample, inputs, frames: int, config: EvalConfig, devices, rank: int,
             context: dict) -> dict:  # fmt: skip
    try:
        out = run_method(engine, spec, inputs, config.generation.max_new_tokens, devices)
    except MethodUnavailable as err:
        return _error_row(sample, spec, rank, err, context)
    except torch.cuda.OutOfMemoryError as err:
        torch.cuda.empty_cache()
        return _error_row(sample, spec, rank, err, context)
    except Exception as err:  # noqa: BLE001 - recorded, not swallowed: the row says what failed and why
        if spec.name == "hf-assisted" or isinstance(err, ValueError):
            logger.debug("%s failed", spec.key, exc_info=True)
            return _error_row(sample, spec, rank, err, context)
        raise
    row = _base_row(sample, spec, rank, context)
    row.update(status="ok", error=None, frames=frames, **out)
    if sample.options:
        mode = config.answer_extraction
        row["prediction"], row["correct"] = metrics.grade(out["text"], sample.options, sample.answer,
                                                          _benchmark_names(config).get(sample.benchmark), mode)
        row["answer_extraction"] = mode
    return row


def _benchmark_names(config: EvalConfig) -> dict[str, str]:
    """Benchmark label -> benchmark name (the lmms-eval answer extraction depends on the benchmark)."""
    return {b.label: b.name for b in config.benchmarks}


def _audit(engine, row: dict, baseline: dict | None, inputs, max_new_tokens: int) -> None:
    """Classify a row whose tokens differ from the ``ar`` row of its sample (identical rows need nothing):
    ``row["divergence"]`` is a near-tie of the target's scores at the first difference (low precision)
    or a mismatch (a bug), with the margin; see :mod:`specvlm.audit`. Costs one target forward."""
    if row.get("status") != "ok" or not baseline or baseline.get("status") != "ok":
        return
    if row["token_ids"] == baseline["token_ids"]:
        return
    try:
        verdict = engine.audit(inputs, baseline["token_ids"], row["token_ids"], do_sample=False, max_new_tokens=max_new_tokens)
    except (ValueError, RuntimeError) as err:  # the row's result stands; only its classification is missing
        logger.warning("%s: could not classify its divergence from ar: %s", row["key"], err)
        return
    row["divergence"] = verdict.to_dict()
    log = logger.error if verdict.verdict == "mismatch" else logger.info
    log("%s differs from ar: %s", row["key"], verdict)


def _warmup(engine, specs, todo, benches, config: EvalConfig, devices) -> dict:
    """Run each method kind ``warmup`` times on the first decodable pending sample; return its inputs."""
    from specvlm import VideoDecodeError

    if config.generation.warmup == 0:
        return {}
    kinds: dict[str, MethodSpec] = {}
    for spec in specs:
        kinds.setdefault(spec.name, spec)
    for sample, _ in todo:
        try:
            prepared = _inputs(engine, sample, benches[sample.benchmark])
        except (VideoDecodeError, AnnotationError):
            continue
        n = config.generation.warmup_max_new_tokens or config.generation.max_new_tokens
        for spec in kinds.values():
            for _ in range(config.generation.warmup):
                try:
                    run_method(engine, spec, prepared[0], n, devices)
                except Exception as err:  # noqa: BLE001 - the timed run records this failure as an error row
                    logger.warning("warm-up of %s failed (%s: %s); the timed run will record it", spec.key, type(err).__name__, err)
                    break
        logger.info("warm-up done on %s", sample.key)
        return {sample.key: prepared}
    return {}


def _progress(enabled: bool, total: int):
    if not enabled or total == 0:
        return nullcontext(None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=Console(stderr=True), transient=False,
    )  # fmt: skip


def environment(engine=None) -> dict:
    """Versions and hardware, recorded in the summary."""
    import transformers

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    if engine is not None:
        env["dtype"] = str(next(engine.target.parameters()).dtype).replace("torch.", "")
    return env


def _check_engine(engine, specs) -> None:
    if engine.draft is None:
        bad = [s.key for s in specs if dict(s.settings).get("positions", "original") != "original"]
        if bad:
            raise ConfigError(f"{bad[0]}: positions other than 'original' need a separate draft model (model.draft is null)")


def run(config: EvalConfig, *, retry_errors: bool = False, progress: bool = True) -> RunOutcome:
    """Run (or resume) the experiment; see the module docstring."""
    from specvlm import VideoDecodeError

    rank = distributed.current(config.model.tp_size)  # a --tp that does not divide the processes costs nothing
    output = prepare_output(Path(config.output))  # before anything else: a bad --output costs nothing
    distributed.init(rank, config.barrier_timeout_s)
    lock = None
    try:
        lock = _lock_all_ranks(rank, output)
        check_resumable(config, output)
        samples = datasets.load_all(config.benchmarks, output, config.limit)
        specs = config.method_specs()
        benches = {b.label: b for b in config.benchmarks}
        on_disk = results.latest_rows(output)
        kept = {k: r for k, r in on_disk.items() if not (retry_errors and r.get("status") == "error")}
        by_key = {s.key: s for s in samples}
        context = {"model": model_record(config), "sampling": {b.label: sampling_record(b) for b in config.benchmarks}}
        passed = {"do_sample": False, "max_new_tokens": config.generation.max_new_tokens}
        check_recorded(output, kept, by_key, benches, context["model"], passed)
        if rank.is_main:
            save_config(config, output / "config.yaml")  # only once this run may write here
        todo = []
        skipped = 0
        anywhere = False  # rows pending in any group: then every rank loads (a sharded load is collective)
        for i, sample in enumerate(samples):
            pending = [m for m in specs if results.row_key(sample.key, m.key) not in kept]
            anywhere = anywhere or bool(pending)
            if not rank.owns(i):
                continue
            skipped += len(specs) - len(pending)
            if pending:
                todo.append((sample, pending))
        total = sum(len(p) for _, p in todo)
        logger.info("rank %d/%d (group %d of %d): %d rows to run, %d already done", rank.rank, rank.world_size,
                    rank.group, rank.groups, total, skipped)  # fmt: skip
        written, engine = 0, None
        if todo or (anywhere and rank.tp_size > 1):
            engine = models.load_engine(config.model, output, rank.local_rank, config.generation.ignore_eos)
            _log_group(engine, rank)
            _check_engine(engine, specs)
            context["generation"] = generation_settings(engine, config.generation.max_new_tokens)
            check_recorded(output, kept, by_key, benches, context["model"], context["generation"])
            devices = models.model_devices(engine)
            path = results.writer_path(output, rank.rank, rank.world_size)
            rows_out = results.RowWriter(path) if rank.writes else nullcontext(_GroupMember())
            with rows_out as writer, _progress(progress and rank.is_main, total) as bar:
                task = bar.add_task("evaluating", total=total) if bar is not None else None
                prepared = _warmup(engine, specs, todo, benches, config, devices)
                for sample, pending in todo:
                    if bar is not None:
                        bar.update(task, description=sample.key)
                    try:
                        inputs, frames = prepared.pop(sample.key, None) or _inputs(engine, sample, benches[sample.benchmark])
                    except (VideoDecodeError, AnnotationError) as err:
                        for spec in pending:
                            writer.write(_error_row(sample, spec, rank.rank, err, context))
                            written += rank.writes
                            if bar is not None:
                                bar.advance(task)
                        continue
                    baseline = kept.get(results.row_key(sample.key, "ar"))
                    for spec in pending:
                        row = _run_one(engine, spec, sample, inputs, frames, config, devices, rank.rank, context)
                        if spec.key == "ar":
                            baseline = row
                        else:
                            _audit(engine, row, baseline, inputs, config.generation.max_new_tokens)
                        writer.write(row)
                        written += rank.writes
                        if bar is not None:
                            bar.advance(task)
        distributed.barrier(rank)
        outcome = RunOutcome(output, rank.rank, rank.world_size, written, skipped)
        if not rank.is_main:
            return outcome
        rows = results.merge(output, _ordering(samples, specs))
        outcome.rows = rows
        outcome.summary = _write_summary(config, output, rows, specs, rank.world_size, environment(engine), rank.tp_size)
        return outcome
    finally:
        if lock is not None:
            lock.release()
        distributed.shutdown(rank)


def _log_group(engine, rank) -> None:
    group = engine.target_adapter.tp_group
    if group is not None:
        import torch.distributed as dist

        logger.info("rank %d: the target is sharded over ranks %s (group %d of %d)", rank.rank,
                    dist.get_process_group_ranks(group), rank.group, rank.groups)  # fmt: skip


class _GroupMember:
    """The row sink of a tensor-parallel group's other ranks: they compute every row in step with the group's
    first rank, which writes it (each row is written once)."""

    def write(self, row: dict) -> None:
        pass


def _ordering(samples: list[Sample], specs: list[MethodSpec]):
    """Sort key for rows: sample order, then method order; unknown rows last, by key."""
    s_index = {s.key: i for i, s in enumerate(samples)}
    m_index = {m.key: i for i, m in enumerate(specs)}

    def key(row: dict) -> tuple:
        sample_key, method_key = row["key"].split("|", 1)
        known = sample_key in s_index and method_key in m_index
        return (0 if known else 1, s_index.get(sample_key, 0), m_index.get(method_key, 0), row["key"])

    return key


def _write_summary(config: EvalConfig, output: Path, rows: list[dict], specs, world_size: int, env: dict,
                   tp_size: int = 1) -> dict:  # fmt: skip
    """Write summary.json, summary.md and (unless disabled) the plots; return the summary."""
    summary = {
        "name": config.name,
        "output": str(output),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "world_size": world_size,
        "tp_size": tp_size,
        "max_new_tokens": config.generation.max_new_tokens,
        "ignore_eos": config.generation.ignore_eos,
        "methods": [s.key for s in specs],
        "environment": env,
        **metrics.summarize(rows, [s.key for s in specs], config.answer_extraction, _benchmark_names(config)),
    }
    (output / "summary.md").write_text(report.markdown(summary) + "\n", encoding="utf-8")
    if config.plots:
        summary["plots"] = report.plots(summary, output)
    (output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def summarize_existing(output: Path, plots: bool = True) -> dict:
    """Rebuild summary files and plots from the rows on disk without running anything.

    Refused while a run holds the directory (its rows are still being written). Reads
    ``results.jsonl`` and any shards but rewrites neither: only a run merges."""
    output = Path(output)
    if not output.is_dir():
        raise ConfigError(f"--summarize {str(output)!r}: not a directory")
    config = EvalConfig.from_dict(load_yaml(output / "config.yaml"))
    if not plots:
        config = dataclasses.replace(config, plots=False)
    with _lock(output, "summarize"):
        specs = config.method_specs()
        samples = datasets.load_all(config.benchmarks, output, config.limit)
        rows = results.ordered_rows(output, _ordering(samples, specs))
        return _write_summary(config, output, rows, specs, 1, environment())
