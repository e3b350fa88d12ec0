"""``python -m bench [--only PART ...] [--quick]``: run the benchmark parts in one process and regenerate
docs/BENCHMARKS.md and docs/benchmarks.json (``make bench``)."""

from __future__ import annotations

import argparse
import importlib
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .machine import machine_info
from .report import Section, verdict, write

PARTS = ("inference", "int8_cpus", "aggregation", "serving", "federation", "text", "footprint", "loop")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument(
        "--only", nargs="*", choices=PARTS + ("gpu",), help="run only these parts (the files then hold only them)"
    )
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run; not for publishing)")
    ap.add_argument("--docs", default="docs", help="where BENCHMARKS.md, benchmarks.json and plots go")
    ap.add_argument("--work", help="scratch dir (default: a temp dir)")
    a = ap.parse_args(argv)
    console = Console(stderr=True)
    machine = machine_info()
    console.print_json(json.dumps(machine))
    docs = Path(a.docs).resolve()
    work = Path(a.work or tempfile.mkdtemp(prefix="fedge-bench-")).resolve()
    sections: list[Section] = []
    started = time.monotonic()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        for part in a.only or PARTS:
            module = importlib.import_module(f"bench.{part}")
            t0 = time.monotonic()
            sec = module.run(work / part, progress, quick=a.quick, docs=docs)
            sec.data["part_wall_s"] = round(time.monotonic() - t0, 1)
            sections.append(sec)
            for name, value in sec.figures.items():
                console.print(f"{name} = {value if value is None else round(value, 4)}  {verdict(name, value)}")
    command = (
        "make bench"
        if not (a.only or a.quick)
        else "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv)
    )
    md, js = write(docs, machine, sections, command, time.monotonic() - started, partial=bool(a.only))
    console.print(f"wrote {md} and {js} in {(time.monotonic() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
