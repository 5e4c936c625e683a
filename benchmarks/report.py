"""Render the benchmarks' raw JSON sections as one Markdown report with PNG plots; imports no
torch.

    .venv/bin/python -m benchmarks.report --raw benchmarks/results/raw --out benchmarks/results

See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after matplotlib.use: the backend first

from benchmarks.sections import versions  # noqa: E402 - (as above)

SECTION_ORDER = (
    "inprocess",
    "formats",
    "http_latency",
    "throughput",
    "csv_batch",
    "columnar_batch",
    "capacity",
    "products",
    "scale",
    "batch_mvn",
)
PACKAGES = ("torch", "botorch", "gpytorch", "linear_operator", "torchserve", "matplotlib")
BENCH_COMMANDS = (
    "python -m benchmarks.inprocess --out benchmarks/results/raw",
    "python -m benchmarks.batch_mvn --out benchmarks/results/raw",
    "python -m benchmarks.http --out benchmarks/results/raw",
    "python -m benchmarks.columnar --out benchmarks/results/raw",
    "python -m benchmarks.capacity --out benchmarks/results/raw",
    "python -m benchmarks.formats --out benchmarks/results/raw",
    "python -m benchmarks.products --out benchmarks/results/raw",
    "python -m benchmarks.scale --out benchmarks/results/raw",
    "python -m benchmarks.report --raw benchmarks/results/raw --out benchmarks/results",
)
DPI = 120
INPROCESS_PLOT = "inprocess_speedup.png"
HTTP_PLOT = "http_latency.png"
PLOT_N = 1000
REQUIRED_KEYS = ("section", "title", "columns", "rows", "notes")
TABLE_KEYS = ("title", "columns", "rows")


# --- loading ------------------------------------------------------------------------


def load_sections(raw: Path) -> list[dict]:
    """Every section in ``raw``, in `SECTION_ORDER` and then by name.

    Raises:
        ValueError: If a file lacks a key of the schema or a row is not as long as the
            columns.
    """
    sections = []
    for path in sorted(raw.glob("*.json")):
        section = json.loads(path.read_text())
        missing = [key for key in REQUIRED_KEYS if key not in section]
        if missing:
            raise ValueError(f"{path}: missing {missing}")
        for extra in section.get("tables", []):
            missing = [key for key in TABLE_KEYS if key not in extra]
            if missing:
                raise ValueError(f"{path}: a table of 'tables' is missing {missing}")
        for part in (section, *section.get("tables", [])):
            for row in part["rows"]:
                if len(row) != len(part["columns"]):
                    raise ValueError(f"{path}: row {row} does not match columns {part['columns']}")
        sections.append(section)
    rank = {name: i for i, name in enumerate(SECTION_ORDER)}
    return sorted(sections, key=lambda s: (rank.get(s["section"], len(rank)), s["section"]))


# --- the stamp ----------------------------------------------------------------------


def git_commit(root: Path) -> str:
    """``git rev-parse --short HEAD``, with ``-dirty`` if tracked files outside
    ``benchmarks/results`` differ from it; ``unknown`` outside a repository."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git(
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            ".",
            ":(exclude)benchmarks/results",
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def machine() -> str:
    """Platform, CPU model, cores and memory, in one line."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/cpuinfo").splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )
    memory = next(
        (
            line.split()[1]
            for line in _read("/proc/meminfo").splitlines()
            if line.startswith("MemTotal:")
        ),
        None,
    )
    memory_text = f"{int(memory) / 2**20:.1f} GiB memory" if memory else "memory unknown"
    return f"{platform.platform()}; {cpu}; {os.cpu_count()} cores; {memory_text}"


def section_versions(sections: list[dict]) -> dict[str, str]:
    """Python's and `PACKAGES`' versions, then any a section lists under ``versions``."""
    found = versions(PACKAGES)
    for section in sections:
        for name, version in section.get("versions", {}).items():
            found.setdefault(name, str(version))
    return found


# --- tables -------------------------------------------------------------------------


def fmt(value: object) -> str:
    """A cell: null as a dash, floats with 3 significant digits, the rest as text."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value == 0:
            return "0"
        if not math.isfinite(value):
            return str(value)
        magnitude = math.floor(math.log10(abs(value)))
        if magnitude < -3 or magnitude >= 6:
            return f"{value:.2e}"
        rounded = round(value, 2 - magnitude)
        magnitude = math.floor(math.log10(abs(rounded)))  # (0.9996 rounds to 1.00)
        return f"{rounded:.{max(0, 2 - magnitude)}f}"
    return str(value).replace("|", "\\|")


def table(section: dict, shown: list[str] | None = None) -> list[str]:
    """The section's rows as a Markdown table (only the columns ``shown``, if given)."""
    columns = section["columns"]
    keep = [columns.index(c) for c in shown] if shown is not None else range(len(columns))
    lines = ["| " + " | ".join(columns[i] for i in keep) + " |", "|" + "---|" * len(keep)]
    lines += ["| " + " | ".join(fmt(row[i]) for i in keep) + " |" for row in section["rows"]]
    return lines


def formats_shown(columns: list[str]) -> list[str]:
    """The ``formats`` section's columns in the report: method, q, each format's median
    and each ratio to TorchScript, in the section's order."""
    return [
        c
        for c in columns
        if c in ("method", "q") or c.endswith(" median ms") or c.endswith("/torchscript")
    ]


# Sections whose main table shows a selection of its columns (the rest: raw JSON only).
SHOWN = {"formats": formats_shown}


# --- plots --------------------------------------------------------------------------


def _column(section: dict, name: str) -> int:
    return section["columns"].index(name)


def plot_inprocess(section: dict, path: Path) -> bool:
    """eager/traced ratio vs q per family at N=`PLOT_N` (else the largest N measured),
    one panel per method.

    Returns:
        Whether anything was plotted (and ``path`` written).
    """
    family, n, q, method, ratio = (
        _column(section, c) for c in ("family", "N", "q", "method", "eager/traced")
    )
    sizes = {r[n] for r in section["rows"] if r[ratio] is not None}
    if not sizes:
        return False
    plot_n = PLOT_N if PLOT_N in sizes else max(sizes)
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    plotted = False
    for axis, name in zip(axes, ("full", "diag"), strict=True):
        rows = [
            r
            for r in section["rows"]
            if r[n] == plot_n and r[method] == name and r[ratio] is not None
        ]
        for label in dict.fromkeys(r[family] for r in rows):
            points = sorted((r[q], r[ratio]) for r in rows if r[family] == label)
            axis.plot(*zip(*points, strict=True), marker="o", label=label)
            plotted = True
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        axis.set_xlabel("q (test points)")
        axis.set_title(f"{name}: {'forward (covariance)' if name == 'full' else 'mean_var'}")
        axis.grid(True, which="both", alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(title="family")
    axes[0].set_ylabel("eager / traced (median time)")
    figure.suptitle(
        f"Speed-up of the traced posterior over eager BoTorch, N={plot_n}, 1 thread, float64"
    )
    figure.tight_layout()
    if plotted:
        figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return plotted


def plot_http_latency(section: dict, path: Path) -> bool:
    """p50 latency vs q for the gp, echo and peer servers, full covariance.

    Returns:
        Whether anything was plotted (and ``path`` written).
    """
    q, covariance = _column(section, "q"), _column(section, "covariance")
    rows = [r for r in section["rows"] if r[covariance] == "full"]
    figure, axis = plt.subplots(figsize=(7, 4.5))
    plotted = False
    for server in ("gp", "echo", "peer"):
        column = _column(section, f"{server} p50 ms")
        points = sorted((r[q], r[column]) for r in rows if r[column] is not None)
        if points:
            axis.plot(*zip(*points, strict=True), marker="o", label=server)
            plotted = True
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("q (test points per request)")
    axis.set_ylabel("p50 latency (ms)")
    axis.set_title("HTTP latency, full covariance: gp vs echo vs peer (p50)")
    axis.grid(True, which="both", alpha=0.3)
    if plotted:
        axis.legend(title="server")
        figure.tight_layout()
        figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return plotted


# --- the report ---------------------------------------------------------------------


def render(sections: list[dict], out: Path, command: str, root: Path) -> str:
    """The report's Markdown; the plots are written to ``out`` as a side effect."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmark results",
        "",
        "Generated by `make bench`; do not edit (regenerate it).",
        "",
        f"- date: {now}",
        f"- commit: `{git_commit(root)}`",
        f"- machine: {machine()}",
        "- versions: "
        + ", ".join(f"{name} {version}" for name, version in section_versions(sections).items()),
        f"- command: `{command}`",
        "",
        "`make bench` runs:",
        "",
        "```",
        *BENCH_COMMANDS,
        "```",
        "",
    ]
    names = [s["section"] for s in sections]
    plots = {
        "inprocess": (INPROCESS_PLOT, plot_inprocess),
        "http_latency": (HTTP_PLOT, plot_http_latency),
    }
    for stale in (INPROCESS_PLOT, HTTP_PLOT):
        (out / stale).unlink(missing_ok=True)
    for section in sections:
        lines += [
            f"## {section['title']}",
            "",
            f"Section `{section['section']}`"
            + (f", `{section['command']}`" if section.get("command") else "")
            + ".",
            "",
        ]
        shown = SHOWN.get(section["section"])
        lines += table(section, shown(section["columns"]) if shown else None) + [""]
        for extra in section.get("tables", []):
            lines += [f"**{extra['title']}**", ""] + table(extra) + [""]
        if section["notes"]:
            lines += [f"- {note}" for note in section["notes"]] + [""]
        if section["section"] in plots:
            filename, plot = plots[section["section"]]
            if plot(section, out / filename):
                lines += [f"![{section['section']}]({filename})", ""]
            else:
                lines += ["(Nothing to plot in this section.)", ""]
    missing = [name for name in ("inprocess", "http_latency") if name not in names]
    if missing:
        lines += ["## Not in this report", ""]
        lines += [
            f"- section `{name}`: no `{name}.json` in the raw directory, so no table "
            f"and no `{plots[name][0]}`."
            for name in missing
        ] + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw", type=Path, default=Path("benchmarks/results/raw"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    sections = load_sections(args.raw)
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.report " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    path = args.out / "README.md"
    path.write_text(render(sections, args.out, command, Path(__file__).resolve().parent))
    print(path)
    return path


if __name__ == "__main__":
    main()
