"""Command line: ``specvlm-eval CONFIG [--set key=value ...] [--limit N] [--output DIR]`` (or ``python -m eval``).

``CONFIG`` is a YAML file or the name of one in ``configs/`` (``tiny`` -> ``configs/tiny.yaml``).
Rank 0 prints a table of the summary at the end; ``--summarize DIR`` rebuilds the summary and plots
of an existing run without generating anything (and without rewriting its results). Exit status: 0
when the run finished (error rows are counted in the summary, not fatal), 2 for a bad config or
dataset, an unusable ``--output`` (a file, under a file, not writable) or a directory in use by
another run (one line on stderr naming the problem, before any model loads).

What this module deliberately does not do: any evaluation logic (that is ``eval.runner``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from eval.config import ConfigError, load_config


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="specvlm-eval", description="Benchmark x method evaluation of SpecVLM.")
    p.add_argument("config", nargs="?", help="YAML config file, or a name in configs/ (e.g. tiny, synthetic)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value: dotted key, YAML value (e.g. generation.max_new_tokens=64, "
                        "benchmarks.0.num_frames=16, benchmarks.*.limit=5); repeatable")
    p.add_argument("--limit", type=int, default=None, help="first N samples of every benchmark group")
    p.add_argument("--benchmarks", default=None, metavar="LABEL[,LABEL]",
                   help="run only these benchmark entries (labels, or names when unlabelled)")
    p.add_argument("--output", default=None, help="output directory (default: the config's output, runs/<name>)")
    p.add_argument("--retry-errors", action="store_true", help="rerun rows recorded as errors")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--summarize", metavar="DIR", default=None,
                   help="only rebuild summary.json/summary.md/plots of the run in DIR (refused while a run holds DIR)")
    p.add_argument("--log-level", default="WARNING", help="logging level (default: WARNING)")
    return p


def config_path(name: str) -> Path:
    """A config file path from a path or a bare name looked up in ./configs and the repository's configs/."""
    path = Path(name)
    if path.is_file():
        return path
    dirs = [Path.cwd() / "configs", Path(__file__).resolve().parent.parent / "configs"]
    stem = name if name.endswith((".yaml", ".yml")) else f"{name}.yaml"
    for d in dirs:
        if (d / stem).is_file():
            return d / stem
    known = sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.yaml")})
    raise ConfigError(f"config {name!r} is neither a file nor one of the configs: {', '.join(known) or 'none found'}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(level=args.log_level.upper(), format=f"%(levelname)s [rank {rank}] %(name)s: %(message)s")
    from rich.console import Console

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    console = Console(width=None if sys.stdout.isatty() else 220)
    from eval import report, runner

    try:
        if args.summarize:
            summary = runner.summarize_existing(Path(args.summarize), plots=not args.no_plots)
            for table in report.rich_tables(summary):
                console.print(table)
            return 0
        if not args.config:
            raise ConfigError("give a config (a YAML file or a name in configs/), or --summarize DIR")
        overrides = list(args.overrides) + (["plots=false"] if args.no_plots else [])
        benchmarks = [b.strip() for b in args.benchmarks.split(",") if b.strip()] if args.benchmarks else None
        config = load_config(config_path(args.config), overrides, limit=args.limit, output=args.output,
                             benchmarks=benchmarks)
        outcome = runner.run(config, retry_errors=args.retry_errors, progress=not args.no_progress)
    except ValueError as err:  # ConfigError, dataset and video-layout problems: say what, no traceback
        sys.stderr.write(f"specvlm-eval: error: {err}\n")
        return 2
    if outcome.summary is not None:
        summary = outcome.summary
        for table in report.rich_tables(summary):
            console.print(table)
        errors = summary["errors"]["rows"]
        if errors:
            console.print(f"[yellow]{errors} error rows[/yellow] (see summary.json 'errors' and results.jsonl)")
        for note in summary.get("notes", []):
            console.print(f"note: {note}")
        console.print(f"results: {outcome.output / 'results.jsonl'} ({len(outcome.rows)} rows; {outcome.written} new)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
