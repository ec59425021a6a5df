"""One benchmark document, four outputs: terminal table, JSON, PNG plot, section of BENCHMARKS.md.

A benchmark produces one plain-data document (`start_document`, then `finish_document`)
holding the command that made it, the machine and its load, and the figures. Everything
shown is rendered from that document, so the table, the plot and BENCHMARKS.md cannot
disagree with the JSON, and nothing in BENCHMARKS.md is typed by hand. Every string goes into
it through `streamrec.redaction.redact`, so a source URL's secrets reach none of them.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from streamrec.bench.machine import ResourceSampler, describe_machine, library_versions, load_average
from streamrec.errors import StreamrecError, check_figure_path, check_output_path
from streamrec.redaction import redact, redact_data

BENCHMARKS_HEADER = """# Benchmarks

Every section below is written by the benchmark itself (`python run_stream.py bench ... --markdown
BENCHMARKS.md`), never by hand: a run replaces its own section (same benchmark, config and
device) and leaves the others alone. Each section names the command, the machine and the load
average while it ran. Timings taken while other work shared the CPU are noisy: compare only
figures measured side by side in one run, as the ratios in each section are.
"""


def start_document(benchmark: str, config_name: str, argv: list[str] | None = None) -> dict:
    """The document's head: what ran, on what, when, and how loaded the machine was at the start."""
    argv = sys.argv[1:] if argv is None else argv
    return {
        "benchmark": benchmark,
        "config": config_name,
        "command": redact("python run_stream.py " + shlex.join(argv)),
        "started_at": _now(),
        "machine": describe_machine(),
    }


def finish_document(document: dict, sampler: ResourceSampler, **sections: Any) -> dict:
    """Add the figures, and how much of the CPU this benchmark and every other process used meanwhile.

    ``sampler`` ran for the whole benchmark: other processes' share of the CPU is the one
    direct measure of how much the timings were disturbed (PyTorch's OpenMP threads in
    particular slow down by far more than their share when a core is taken from them).
    """
    document.update(redact_data(sections))
    sampler.stop()
    cores = document["machine"]["cpu_cores_logical"]
    own = (sampler.mean("process_cpu") or 0.0) / cores
    document["cpu_use"] = {
        "this_benchmark_percent": round(own, 1),
        "other_processes_percent": round(max(0.0, (sampler.mean("system_cpu") or 0.0) - own), 1),
        "note": "mean over the run; 100 = every CPU of the machine busy",
    }
    document["machine"]["libraries"] = library_versions()  # now also what the run imported (torch's CUDA)
    document["finished_at"] = _now()
    document["load_average_after"] = load_average()
    return document


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


REPORT_FLAGS = ("json", "markdown", "plot")  # the bench options that name a file to write


def check_report_paths(args) -> None:
    """Fail before a benchmark runs, not after it: each of ``--json``, ``--markdown`` and ``--plot``
    given must be a local path where a regular file is or may be (`check_output_path`), the plot
    one matplotlib writes (`check_figure_path`) and an existing Markdown file text."""
    for name in REPORT_FLAGS:
        if getattr(args, name, None):
            (check_figure_path if name == "plot" else check_output_path)(getattr(args, name), f"--{name}")
    if getattr(args, "markdown", None):
        read_markdown(Path(args.markdown))


def read_markdown(path: Path) -> str:
    """The Markdown file a section goes into (a new one starts with `BENCHMARKS_HEADER`)."""
    if not path.is_file():
        return BENCHMARKS_HEADER
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise StreamrecError(f"--markdown {path} is not a text file; give a Markdown file (e.g. BENCHMARKS.md) "
                             "or a new name") from None
    except OSError as err:
        raise StreamrecError(f"cannot read {path}: {err.strerror}; choose a readable --markdown file") from None


def write_json(document: dict, path: str | Path) -> None:
    path = check_output_path(path, "--json")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=2) + "\n")
    except OSError as err:
        raise StreamrecError(f"cannot write {path}: {err.strerror}; choose a writable --json path") from None


# --------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class Column:
    header: str
    key: str | Callable[[dict], Any]
    digits: int | None = None  # decimals for floats; None prints ints and text as they are

    def cell(self, row: dict) -> str:
        value = self.key(row) if callable(self.key) else row.get(self.key)
        if value is None:
            return "-"
        if isinstance(value, float) and self.digits is not None:
            return f"{value:.{self.digits}f}"
        return str(value)


def table(rows: list[dict], columns: list[Column], markdown: bool = False) -> str:
    """Rows as an aligned text table, or as a Markdown table."""
    cells = [[c.header for c in columns]] + [[c.cell(r) for c in columns] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(cells[0]) + " |", "|" + "|".join("---" for _ in columns) + "|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells[1:]])
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def machine_line(document: dict) -> str:
    """One line: CPU and cores, GPU and driver, the key library versions."""
    machine = document["machine"]
    parts = [f"{machine['cpu_model']} ({machine['cpu_cores_physical']} cores, {machine['cpu_cores_logical']} threads"
             f"{', ' + ' '.join(machine['cpu_features']) if machine['cpu_features'] else ''})",
             f"{machine['memory_gib']} GiB RAM"]
    parts += [f"{g['name']} (driver {g['driver']})" for g in machine["gpus"]] or ["no GPU"]
    libraries = machine["libraries"]
    parts.append(", ".join(f"{name} {libraries[name]}" for name in
                           ("torch", "onnxruntime", "onnxruntime-gpu", "tensorrt", "numpy") if name in libraries))
    parts.append(machine["os"])
    return "; ".join(parts)


def load_line(document: dict) -> str:
    before, after = document["machine"]["load_average"], document.get("load_average_after")
    cores = document["machine"]["cpu_cores_logical"]
    shown = lambda load: "/".join(f"{v:.2f}" for v in load) if load else "unknown"  # noqa: E731
    line = f"Load average (1/5/15 min) {shown(before)} at the start, {shown(after)} at the end, on {cores} CPUs"
    use = document.get("cpu_use")
    if use:
        line += (f"; other processes used {use['other_processes_percent']:.0f}% of the machine's CPU on average while "
                 f"it ran (this benchmark {use['this_benchmark_percent']:.0f}%)")
    return line


# --------------------------------------------------------------------------- BENCHMARKS.md


def markdown_section(document: dict, title: str, body: str) -> str:
    return "\n".join([
        f"## {title}",
        "",
        f"Measured {document['started_at']} to {document['finished_at']} with",
        "",
        f"```\n{document['command']}\n```",
        "",
        f"- Machine: {machine_line(document)}",
        f"- {load_line(document)}",
        "",
        body.strip(),
        "",
    ])


def update_markdown(path: str | Path, key: str, section: str) -> None:
    """Replace the section marked ``key`` in ``path``, or append it; other sections stay as they are."""
    path = check_output_path(path, "--markdown")
    begin, end = f"<!-- bench:{key} -->", f"<!-- /bench:{key} -->"
    block = f"{begin}\n{section.rstrip()}\n{end}\n"
    text = read_markdown(path)
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.DOTALL)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + block
    try:
        path.write_text(text)
    except OSError as err:
        raise StreamrecError(f"cannot write {path}: {err.strerror}; choose a writable --markdown path") from None


def section_key(document: dict, device: str, label: str | None = None) -> str:
    """What identifies a section: benchmark, config, device, and the user's label if any."""
    parts = [document["benchmark"], document["config"], device] + ([label] if label else [])
    return re.sub(r"[^A-Za-z0-9_.:-]+", "-", ":".join(parts))


# --------------------------------------------------------------------------- plots


def new_figure(columns: int):
    """A matplotlib figure drawn off-screen (no display needed), ``columns`` panels side by side."""
    try:
        import matplotlib
    except ImportError:
        raise StreamrecError("--plot needs matplotlib: pip install matplotlib (or the 'plots' extra)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, columns, figsize=(6 * columns, 4.5), squeeze=False)
    return figure, list(axes[0])


def save_figure(figure, path: str | Path, title: str) -> None:
    import matplotlib.pyplot as plt

    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    try:
        check_figure_path(path, "--plot")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=110)
    except OSError as err:
        raise StreamrecError(f"cannot write {path}: {err.strerror}; choose a writable --plot path") from None
    finally:
        plt.close(figure)
