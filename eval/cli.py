"""Command line: ``specvlm-eval CONFIG [--set key=value ...] [--limit N] [--output DIR] [--tp T]`` (or ``python -m
eval``; several processes: ``torchrun --nproc_per_node N -m specvlm_eval CONFIG [--tp T]``, N / T groups of T ranks).

``CONFIG`` is a YAML file or the name of one of the packaged configs (``tiny`` -> ``configs/tiny.yaml``,
looked up in ``./configs`` first, then in the configs installed with the package).
Rank 0 prints a table of the summary at the end, as wide as the terminal (``specvlm_eval.report.rich_tables``
says which columns give way first); ``--summarize DIR`` rebuilds the summary and plots of an existing run
without generating anything (and without rewriting its results).

Exit status: 0 when the run finished (error rows are counted in the summary, not fatal); 2 for a bad
config, flag or dataset, text that is not valid UTF-8, an unusable ``--output`` (a file, under a file,
not writable) or a directory in use by another run (one line on stderr naming the problem, before any
model loads); 130 for Ctrl-C (one line; every finished row stays in the output directory and a rerun of
the same command resumes after it).

What this module deliberately does not do: any evaluation logic (that is ``specvlm_eval.runner``).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

from specvlm_eval.config import ConfigError, load_config
from specvlm.cli import LOG_LEVELS, OneLineParser, _int_at_least, check_text_arguments, one_line

#: Where the experiment files live: ``eval/configs`` (in the source tree a link to the top-level
#: ``configs/``; in an installed wheel a copy of it).
PACKAGED_CONFIGS = Path(__file__).resolve().parent / "configs"
#: The table's width when stdout is not a terminal and ``COLUMNS`` is unset.
PIPE_WIDTH = 170  # a default method key (pruning, drop rate, tree and one more setting) stays whole


def _parser() -> OneLineParser:
    p = OneLineParser(prog="specvlm-eval", description="Benchmark x method evaluation of SpecVLM.")
    p.add_argument("config", nargs="?", help="YAML config file, or a packaged config's name (e.g. tiny, synthetic)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value: dotted key, YAML value (e.g. generation.max_new_tokens=64, "
                        "benchmarks.0.num_frames=16, benchmarks.*.limit=5); repeatable")
    p.add_argument("--limit", type=int, default=None, help="first N samples of every benchmark group")
    p.add_argument("--benchmarks", default=None, metavar="LABEL[,LABEL]",
                   help="run only these benchmark entries (labels, or names when unlabelled)")
    p.add_argument("--output", default=None, help="output directory (default: the config's output, runs/<name>)")
    p.add_argument("--tp", type=_int_at_least(1), default=None, metavar="T",
                   help="shard the target over groups of T processes (tensor parallel; model.tp_size; T > 1 also "
                        "sets model.device_map to null): under `torchrun --nproc_per_node N`, N / T groups answer "
                        "their shares of the samples side by side")
    p.add_argument("--retry-errors", action="store_true", help="rerun rows recorded as errors")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--summarize", metavar="DIR", default=None,
                   help="only rebuild summary.json/summary.md/plots of the run in DIR (refused while a run holds DIR)")
    p.add_argument("--log-level", default="WARNING", type=str.upper, choices=LOG_LEVELS,
                   help="logging level (default: WARNING)")  # fmt: skip
    return p


def flag_overrides(args) -> list[str]:
    """The ``--set`` overrides, then those the flags make: ``--no-plots``, and ``--tp`` (``model.tp_size``; T > 1
    also nulls ``model.device_map``, since each rank's shards go on its own GPU, unless ``--set`` places the model)."""
    overrides = list(args.overrides) + (["plots=false"] if args.no_plots else [])
    if args.tp is not None:
        placed = any(o.split("=", 1)[0].strip() == "model.device_map" for o in args.overrides)
        overrides += [f"model.tp_size={args.tp}"] + (["model.device_map=null"] if args.tp > 1 and not placed else [])
    return overrides


def config_dirs() -> list[Path]:
    """Where a bare config name is looked up, in order: ``./configs``, then the packaged configs."""
    return [Path.cwd() / "configs", PACKAGED_CONFIGS]


def config_path(name: str) -> Path:
    """A config file path from a path or a bare name looked up in :func:`config_dirs`."""
    if not name.strip():
        raise ConfigError("the config name is empty; give a YAML file or one of the packaged configs")
    path = Path(name)
    if path.is_dir():
        raise ConfigError(f"config {name!r} is a directory; give a YAML file or the name of a packaged config")
    if path.is_file():
        return path
    dirs = config_dirs()
    stem = name if name.endswith((".yaml", ".yml")) else f"{name}.yaml"
    if os.sep not in name and "/" not in name:
        for d in dirs:
            if (d / stem).is_file():
                return d / stem
    known = sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.yaml")})
    raise ConfigError(f"config {name!r} is neither a file nor one of the configs: {', '.join(known) or 'none found'}")


def table_width() -> int:
    """Columns for the summary table: the terminal's width (``COLUMNS`` first), else :data:`PIPE_WIDTH`."""
    if os.environ.get("COLUMNS", "").isdigit():
        return max(40, int(os.environ["COLUMNS"]))
    if sys.stdout.isatty():
        return max(40, shutil.get_terminal_size().columns)
    return PIPE_WIDTH


def _interrupted(output: Path | None) -> int:
    where = (f"; every finished row is kept in {str(output)!r} and rerunning the same command resumes after it"
             if output is not None else "")  # fmt: skip
    sys.stderr.write(f"specvlm-eval: interrupted (Ctrl-C){where}\n")
    return 130


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except KeyboardInterrupt:
        return _interrupted(None)
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(level=args.log_level, format=f"%(levelname)s [rank {rank}] %(name)s: %(message)s")
    output: Path | None = None
    try:
        check_text_arguments(args, {"overrides": "--set", "benchmarks": "--benchmarks"})
        from rich.console import Console

        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        console = Console(width=table_width())
        from specvlm_eval import report, runner

        if args.summarize:
            output = Path(args.summarize)
            summary = runner.summarize_existing(output, plots=not args.no_plots)
            for table in report.rich_tables(summary, width=console.width):
                console.print(table)
            return 0
        if not args.config:
            raise ConfigError("give a config (a YAML file or the name of a packaged config), or --summarize DIR")
        overrides = flag_overrides(args)
        benchmarks = [b.strip() for b in args.benchmarks.split(",") if b.strip()] if args.benchmarks else None
        config = load_config(config_path(args.config), overrides, limit=args.limit, output=args.output,
                             benchmarks=benchmarks)  # fmt: skip
        output = Path(config.output)
        outcome = runner.run(config, retry_errors=args.retry_errors, progress=not args.no_progress)
        if outcome.summary is not None:
            summary = outcome.summary
            for table in report.rich_tables(summary, width=console.width):
                console.print(table)
            errors = summary["errors"]["rows"]
            if errors:
                console.print(f"[yellow]{errors} error rows[/yellow] (see summary.json 'errors' and results.jsonl)")
            for note in summary.get("notes", []):
                console.print(f"note: {note}")
            console.print(f"results: {outcome.output / 'results.jsonl'} ({len(outcome.rows)} rows; {outcome.written} new)")
    except KeyboardInterrupt:  # rows are appended (and flushed) one by one: nothing finished is lost
        return _interrupted(output)
    except (ValueError, OSError) as err:  # ConfigError, dataset and video-layout problems: say what, no traceback
        sys.stderr.write(f"specvlm-eval: error: {one_line(err)}\n")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
