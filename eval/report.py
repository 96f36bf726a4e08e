"""Render a summary: a rich table for the terminal, a Markdown table, and matplotlib PNG plots.

Plots (Agg backend, one subplot per benchmark group): ``speedup.png`` (decode and end-to-end
speedup over ``ar``, total over total, per method), ``tau.png`` (tau per method, bonus token
included) and, when the config sweeps ``drop_rate`` for a pruning strategy, ``tau_vs_drop_rate.png``
(tau against drop rate, one line per strategy).

What this module deliberately does not do: compute metrics (it only formats ``metrics.summarize``
output) or read result files.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

logger = logging.getLogger(__name__)

COLUMNS = (
    # (header, metric key, format)
    ("ok/err", None, None),
    ("tau", "tau", "{:.2f}"),
    ("tau-1", "tau_minus_1", "{:.2f}"),
    ("decode x", "decode_speedup_total", "{:.2f}x"),
    ("decode x (mean)", "decode_speedup_mean", "{:.2f}x"),
    ("e2e x", "e2e_speedup_total", "{:.2f}x"),
    ("TTFT ms", "ttft_s_mean", "ms"),
    ("TPOT ms", "tpot_s", "ms"),
    ("tok/s", "tokens_per_s", "{:.1f}"),
    ("draft KV", "draft_kv_fraction_mean", "{:.1%}"),
    ("peak MiB", "peak_memory_bytes_max", "mib"),
    ("lossless", "lossless_rate", "{:.0%}"),
    ("accuracy", "accuracy", "{:.1%}"),
)


def _cell(metrics: dict, key: str | None, fmt: str | None) -> str:
    if key is None:
        return f"{metrics['ok']}/{metrics['errors']}"
    value = metrics.get(key)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if fmt == "ms":
        return f"{value * 1000:.1f}"
    if fmt == "mib":
        return f"{value / 2**20:.0f}"
    return fmt.format(value)


def rows_for_table(summary: dict) -> list[tuple[str, str, list[str]]]:
    """[(group, method, cells)] in summary order."""
    out = []
    for group, g in summary.get("groups", {}).items():
        for method, m in g["methods"].items():
            out.append((group, method, [_cell(m, key, fmt) for _, key, fmt in COLUMNS]))
    return out


def markdown(summary: dict) -> str:
    """A Markdown table of every (group, method), plus the error count and the notes."""
    headers = ["benchmark", "method"] + [h for h, _, _ in COLUMNS]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for group, method, cells in rows_for_table(summary):
        lines.append("| " + " | ".join([group, f"`{method}`"] + cells) + " |")
    errors = summary.get("errors", {})
    lines.append("")
    lines.append(f"Error rows: {errors.get('rows', 0)} (samples with errors: {errors.get('samples', 0)}).")
    for group, g in summary.get("groups", {}).items():
        for method, m in g["methods"].items():
            if m.get("near_ties") or m.get("mismatches"):
                lines.append(
                    f"Divergences from ar in {group} `{method}`: {m.get('near_ties', 0)} near-tie(s) of the target's "
                    f"scores, {m.get('mismatches', 0)} mismatch(es) (bugs); see summary.json 'divergences'."
                )
    for note in summary.get("notes", []):
        lines.append(f"Note: {note}")
    return "\n".join(lines)


#: How the terminal table gives way when it is wider than ``width``, step by step until it fits: the
#: columns of :data:`DROP_FIRST` are left out one at a time (the least needed first); then the method
#: column folds its keys over lines of :data:`FOLD_WIDTH` characters; then the columns of
#: :data:`DROP_THEN` are left out one at a time; last the method column folds down to
#: :data:`MIN_METHOD_WIDTH`. ``method``, ``ok/err``, ``tau`` and ``decode x`` always stay, summary.md and
#: summary.json keep every column, and the table's caption names what was left out.
DROP_FIRST = ("decode x (mean)", "tau-1", "tok/s", "peak MiB")
FOLD_WIDTH = 36
DROP_THEN = ("TPOT ms", "TTFT ms", "draft KV", "accuracy", "e2e x", "lossless")
MIN_METHOD_WIDTH = 12


def _table(title: str, rows: list[tuple[str, list[str]]], headers: list[str], left_out: list[str],
           method_width: int | None):  # fmt: skip
    from rich.markup import escape
    from rich.table import Table

    keep = [i for i, h in enumerate(headers) if h not in left_out]
    caption = f"left out to fit the terminal: {', '.join(left_out)} (summary.md has every column)" if left_out else None
    table = Table(title=escape(title), title_justify="left", caption=caption, caption_justify="left")
    if method_width is None:
        table.add_column("method", no_wrap=True)
    else:
        table.add_column("method", overflow="fold", max_width=method_width)
    for i in keep:
        table.add_column(headers[i], justify="right", no_wrap=True)
    for method, cells in rows:
        table.add_row(escape(method), *[cells[i] for i in keep])
    return table


def rich_tables(summary: dict, width: int | None = None) -> list:
    """One ``rich.table.Table`` per benchmark group, at most ``width`` columns wide when given (see
    :data:`DROP_FIRST` for what gives way, in which order); ``None``: every column, however wide."""
    from rich.console import Console
    from rich.measure import Measurement

    console = Console(width=10_000)  # measures the table at its natural width
    headers = [h for h, _, _ in COLUMNS]
    tables = []
    for group, g in summary.get("groups", {}).items():
        title = f"{summary.get('name', '')} - {group} ({g['samples']} samples)"
        rows = [(method, [_cell(m, key, fmt) for _, key, fmt in COLUMNS]) for method, m in g["methods"].items()]
        steps = [("drop", h) for h in DROP_FIRST] + [("fold", FOLD_WIDTH)] + [("drop", h) for h in DROP_THEN]
        longest = max((len(method) for method, _ in rows), default=len("method"))
        steps += [("fold", w) for w in range(min(longest, FOLD_WIDTH) - 1, MIN_METHOD_WIDTH - 1, -1)]
        left_out: list[str] = []
        method_width = None
        table = _table(title, rows, headers, left_out, method_width)
        for kind, value in steps:
            if width is None or Measurement.get(console, console.options, table).maximum <= width:
                break
            if kind == "drop":
                left_out.append(value)
            elif value < longest:
                method_width = value
            table = _table(title, rows, headers, left_out, method_width)
        tables.append(table)
    return tables


# --------------------------------------------------------------------------- plots


def _groups(summary: dict) -> list[tuple[str, dict]]:
    return [(g, d["methods"]) for g, d in summary.get("groups", {}).items()]


def _bars(summary: dict, path: Path, series: list[tuple[str, str]], xlabel: str, baseline: float | None) -> Path | None:
    """Horizontal grouped bars (methods down the side, full keys readable), one subplot per group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(g, m) for g, m in _groups(summary) if any(v.get(k) is not None for v in m.values() for k, _ in series)]
    if not groups:
        return None
    heights = [0.9 + 0.32 * len(series) * len(m) for _, m in groups]
    fig, axes = plt.subplots(len(groups), 1, figsize=(9.0, sum(heights) + 0.4), squeeze=False,
                             gridspec_kw={"height_ratios": heights})  # fmt: skip
    height = 0.8 / len(series)
    for ax, (group, methods) in zip(axes[:, 0], groups):
        names = list(methods)[::-1]
        for j, (key, label) in enumerate(series):
            values = [methods[n].get(key) for n in names]
            ys = [i + ((len(series) - 1) / 2 - j) * height for i in range(len(names))]
            kept = [(y, v) for y, v in zip(ys, values) if v is not None]
            bars = ax.barh([y for y, _ in kept], [v for _, v in kept], height, label=label)
            ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
        if baseline is not None:
            ax.axvline(baseline, color="grey", linewidth=0.8, linestyle="--")
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names, fontsize=7)
        ax.set_xlabel(xlabel)
        ax.set_title(group, fontsize=10)
        ax.margins(x=0.12)
        if len(series) > 1:
            ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _drop_rate_sweeps(methods: dict) -> dict[str, list[tuple[float, float]]]:
    """{pruning strategy (+ other settings): [(drop_rate, tau), ...]} where a specvlm sweep has >= 2 drop rates."""
    lines: dict[str, list[tuple[float, float]]] = {}
    for m in methods.values():
        settings = m.get("settings") or {}
        if m.get("method_name") != "specvlm" or m.get("tau") is None or "drop_rate" not in settings:
            continue
        rest = {k: v for k, v in settings.items() if k not in ("pruning", "drop_rate")}
        label = str(settings.get("pruning"))
        lines.setdefault((label, repr(sorted(rest.items()))), []).append((float(settings["drop_rate"]), m["tau"]))
    sweeps = {k: sorted(v) for k, v in lines.items() if len({d for d, _ in v}) >= 2}
    labels = [k[0] for k in sweeps]
    return {(k[0] if labels.count(k[0]) == 1 else f"{k[0]} {k[1]}"): v for k, v in sweeps.items()}


def _tau_vs_drop(summary: dict, path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(g, _drop_rate_sweeps(m)) for g, m in _groups(summary)]
    groups = [(g, s) for g, s in groups if s]
    if not groups:
        return None
    fig, axes = plt.subplots(1, len(groups), figsize=(5.0 * len(groups), 3.8), squeeze=False)
    for ax, (group, sweeps) in zip(axes[0], groups):
        for label, points in sweeps.items():
            ax.plot([d for d, _ in points], [t for _, t in points], marker="o", label=label)
        ax.set_xlabel("drop rate")
        ax.set_ylabel("tau (tokens per step, bonus incl.)")
        ax.set_title(group)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plots(summary: dict, output: Path) -> list[str]:
    """Write the PNG plots into ``output``; returns their file names."""
    made = [
        _bars(summary, output / "speedup.png", [("decode_speedup_total", "decode"), ("e2e_speedup_total", "end-to-end")],
              "speedup over ar (x)", 1.0),
        _bars(summary, output / "tau.png", [("tau", "tau")], "tau (tokens per step, bonus incl.)", 1.0),
        _tau_vs_drop(summary, output / "tau_vs_drop_rate.png"),
    ]  # fmt: skip
    names = [p.name for p in made if p is not None]
    logger.info("plots written: %s", ", ".join(names) or "none")
    return names
