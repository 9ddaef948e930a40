"""Run every benchmark module (bench/bench_*.py) or those named on the command line.

Each module has ``run(workdir: Path) -> list[tuple[str, float, str]]`` returning
(figure, value, unit). Figures are printed, never asserted: targets live here, not
in timed tests.
"""

from __future__ import annotations

import importlib
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    names = argv or sorted(p.stem.removeprefix("bench_") for p in here.glob("bench_*.py"))
    for name in names:
        module = importlib.import_module(f"bench.bench_{name}")
        print(f"== {name}: {(module.__doc__ or '').strip().splitlines()[0]}")
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"curator-bench-{name}-") as tmp:
            for figure, value, unit in module.run(Path(tmp)):
                print(f"  {figure:<52} {value:>14,.2f} {unit}")
        print(f"  ({time.perf_counter() - start:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
