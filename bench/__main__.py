"""`python -m bench [NAME ...]` (or `make bench`): run the benchmarks, print Markdown for
docs/benchmarks.md, and keep the raw numbers in bench/results/NAME.json."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import kernel_cost, scrape, startup, throughput, trace_rate, userspace_cost
from bench.machine import describe

Runner = tuple[Callable[[], dict[str, Any]], Callable[[dict[str, Any]], str]]

BENCHMARKS: dict[str, Runner] = {
    "kernel": (kernel_cost.run, kernel_cost.report),
    "userspace": (userspace_cost.run, userspace_cost.report),
    "throughput": (throughput.run, throughput.report),
    "scrape": (scrape.run, scrape.report),
    "startup": (startup.run, startup.report),
    "trace": (trace_rate.run, trace_rate.report),
}
RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"of {', '.join(BENCHMARKS)} (default: all)")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")
    if os.geteuid() != 0:
        print("bench: needs root (BPF programs, network namespaces)", file=sys.stderr)
        return 1
    RESULTS.mkdir(exist_ok=True)
    machine = describe()
    print("Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()))
    for name in args.names or list(BENCHMARKS):
        run, report = BENCHMARKS[name]
        started = time.monotonic()
        result = run()
        result["machine"] = machine
        result["took_seconds"] = time.monotonic() - started
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"\n## {name} ({result['took_seconds']:.0f} s)\n\n{report(result)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
