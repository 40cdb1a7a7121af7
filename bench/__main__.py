"""`make bench`: run every benchmark module in this directory (each has a main(argv) -> int)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Callable

import bench


def main() -> int:
    status = 0
    for module in sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_")):
        print(f"== bench.{module}", flush=True)
        run: Callable[[list[str]], int] = importlib.import_module(f"bench.{module}").main
        status = run(sys.argv[1:]) or status
    return status


if __name__ == "__main__":
    sys.exit(main())
