"""Run a benchmark x method matrix: resume, shard, generate, record, merge, summarise.

For every sample this rank owns (round-robin over the deterministic sample list) the video is
decoded and processed once, then every pending method runs on those same inputs (``ar`` first), and
each (sample, method) result is appended to disk immediately. Rows already on disk are skipped, so
rerunning the same command resumes. A missing or undecodable video, an ``hf-assisted`` setup that
transformers cannot run, a per-sample ``ValueError`` from the engine (e.g. context overflow) or a
CUDA out-of-memory becomes an error row with the reason, and the run goes on. Warm-up runs (each
method kind, on the first pending sample) precede timing and are not recorded.

At the end (after a barrier when there are several ranks) rank 0 merges the shards into
``results.jsonl``, writes ``summary.json`` / ``summary.md`` and the plots.

What this module deliberately does not do: parse command lines or print (the CLI renders the
summary), or retry failures by itself (``retry_errors`` reruns error rows on request).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from eval import datasets, distributed, metrics, models, report, results
from eval.config import ConfigError, EvalConfig, MethodSpec, fingerprint_conflicts, load_yaml, save_config
from eval.datasets import Sample
from eval.methods import MethodUnavailable, run_method

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


def _inputs(engine, sample: Sample, bench) -> tuple[object, int]:
    """Processed inputs for one sample (decoded once, shared by every method) and the frame count."""
    from specvlm import load_video

    if bench.fps is not None:
        clip = load_video(sample.video, fps=bench.fps, max_frames=bench.max_frames)
    else:
        clip = load_video(sample.video, num_frames=bench.num_frames)
    return engine.build_inputs(clip, sample.prompt), clip.num_frames


def _base_row(sample: Sample, spec: MethodSpec, rank: int) -> dict:
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
        "answer": sample.answer,
        "rank": rank,
        "time": time.time(),
    }


def _error_row(sample: Sample, spec: MethodSpec, rank: int, err: BaseException) -> dict:
    row = _base_row(sample, spec, rank)
    row.update(status="error", error=f"{type(err).__name__}: {err}", error_type=type(err).__name__)
    logger.warning("%s: error row: %s", row["key"], row["error"])
    return row


def _run_one(engine, spec: MethodSpec, sample: Sample, inputs, frames: int, config: EvalConfig, devices, rank: int) -> dict:
    try:
        out = run_method(engine, spec, inputs, config.generation.max_new_tokens, devices)
    except MethodUnavailable as err:
        return _error_row(sample, spec, rank, err)
    except torch.cuda.OutOfMemoryError as err:
        torch.cuda.empty_cache()
        return _error_row(sample, spec, rank, err)
    except Exception as err:  # noqa: BLE001 - recorded, not swallowed: the row says what failed and why
        if spec.name == "hf-assisted" or isinstance(err, ValueError):
            logger.debug("%s failed", spec.key, exc_info=True)
            return _error_row(sample, spec, rank, err)
        raise
    row = _base_row(sample, spec, rank)
    row.update(status="ok", error=None, frames=frames, **out)
    if sample.options:
        row["prediction"] = metrics.extract_choice(out["text"], len(sample.options), sample.options)
        row["correct"] = None if sample.answer is None else row["prediction"] == sample.answer
    return row


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
        except VideoDecodeError:
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

    rank = distributed.current()
    distributed.init(rank, config.barrier_timeout_s)
    try:
        output = Path(config.output)
        output.mkdir(parents=True, exist_ok=True)
        check_resumable(config, output)
        if rank.is_main:
            save_config(config, output / "config.yaml")
        samples = datasets.load_all(config.benchmarks, output, config.limit)
        specs = config.method_specs()
        benches = {b.label: b for b in config.benchmarks}
        done = results.finished_keys(output, retry_errors)
        todo = []
        skipped = 0
        for i, sample in enumerate(samples):
            if not rank.owns(i):
                continue
            pending = [m for m in specs if results.row_key(sample.key, m.key) not in done]
            skipped += len(specs) - len(pending)
            if pending:
                todo.append((sample, pending))
        total = sum(len(p) for _, p in todo)
        logger.info("rank %d/%d: %d rows to run, %d already done", rank.rank, rank.world_size, total, skipped)
        written, engine = 0, None
        if todo:
            engine = models.load_engine(config.model, output, rank.local_rank, config.generation.ignore_eos)
            _check_engine(engine, specs)
            devices = models.model_devices(engine)
            path = results.writer_path(output, rank.rank, rank.world_size)
            with results.RowWriter(path) as writer, _progress(progress and rank.is_main, total) as bar:
                task = bar.add_task("evaluating", total=total) if bar is not None else None
                prepared = _warmup(engine, specs, todo, benches, config, devices)
                for sample, pending in todo:
                    if bar is not None:
                        bar.update(task, description=sample.key)
                    try:
                        inputs, frames = prepared.pop(sample.key, None) or _inputs(engine, sample, benches[sample.benchmark])
                    except VideoDecodeError as err:
                        for spec in pending:
                            writer.write(_error_row(sample, spec, rank.rank, err))
                            written += 1
                            if bar is not None:
                                bar.advance(task)
                        continue
                    for spec in pending:
                        writer.write(_run_one(engine, spec, sample, inputs, frames, config, devices, rank.rank))
                        written += 1
                        if bar is not None:
                            bar.advance(task)
        distributed.barrier(rank)
        outcome = RunOutcome(output, rank.rank, rank.world_size, written, skipped)
        if not rank.is_main:
            return outcome
        rows = results.merge(output, _ordering(samples, specs))
        outcome.rows = rows
        outcome.summary = _write_summary(config, output, rows, specs, rank.world_size, environment(engine))
        return outcome
    finally:
        distributed.shutdown(rank)


def _ordering(samples: list[Sample], specs: list[MethodSpec]):
    """Sort key for rows: sample order, then method order; unknown rows last, by key."""
    s_index = {s.key: i for i, s in enumerate(samples)}
    m_index = {m.key: i for i, m in enumerate(specs)}

    def key(row: dict) -> tuple:
        sample_key, method_key = row["key"].split("|", 1)
        known = sample_key in s_index and method_key in m_index
        return (0 if known else 1, s_index.get(sample_key, 0), m_index.get(method_key, 0), row["key"])

    return key


def _write_summary(config: EvalConfig, output: Path, rows: list[dict], specs, world_size: int, env: dict) -> dict:
    """Write summary.json, summary.md and (unless disabled) the plots; return the summary."""
    summary = {
        "name": config.name,
        "output": str(output),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "world_size": world_size,
        "max_new_tokens": config.generation.max_new_tokens,
        "ignore_eos": config.generation.ignore_eos,
        "methods": [s.key for s in specs],
        "environment": env,
        **metrics.summarize(rows, [s.key for s in specs]),
    }
    (output / "summary.md").write_text(report.markdown(summary) + "\n", encoding="utf-8")
    if config.plots:
        summary["plots"] = report.plots(summary, output)
    (output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def summarize_existing(output: Path, plots: bool = True) -> dict:
    """Rebuild summary files and plots from ``output/results.jsonl`` (and shards) without running anything."""
    config = EvalConfig.from_dict(load_yaml(output / "config.yaml"))
    if not plots:
        config = dataclasses.replace(config, plots=False)
    specs = config.method_specs()
    samples = datasets.load_all(config.benchmarks, output, config.limit)
    rows = results.merge(output, _ordering(samples, specs))
    return _write_summary(config, output, rows, specs, 1, environment())
