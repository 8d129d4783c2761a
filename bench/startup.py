"""Start-up of the command lines: ``curate --help`` and ``align-train --help``, each a fresh interpreter.

What every typer command line pays (Python, typer and rich, ``import typer.rich_utils``) is measured in the
same run as the floor. ``--before DIR`` times the same commands from another checkout of the project (a
folder with ``curate/`` and ``align_train/``) alternately with this one, so a change reads side by side.
Figures are medians over ``--repeats`` rounds; CPU time is the child's user + system time, which a busy
machine inflates less than the wall clock.

    python bench/startup.py                      # ~20 s
    python bench/startup.py --before /path/to/an/older/checkout
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "curate --help": ["-m", "curate", "--help"],
    "curate build --help": ["-m", "curate", "build", "--help"],
    "align-train --help": ["-m", "align_train", "--help"],
    "align-train train --help": ["-m", "align_train", "train", "--help"],
}
FLOOR = ("python + typer (floor)", ["-c", "import typer.rich_utils"])


def run_once(args: list[str], *, root: Path) -> tuple[float, float]:
    """Wall and CPU seconds of ``python ARGS`` run from ``root`` with ``root`` on the path."""
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=root, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--before", type=Path, help="another checkout to time alongside this one")
    args = parser.parse_args()

    arms: list[tuple[str, list[str], Path]] = [(FLOOR[0], FLOOR[1], ROOT)]
    for name, argv in COMMANDS.items():
        arms.append((name, argv, ROOT))
        if args.before is not None:
            arms.append((f"{name} (before)", argv, args.before.resolve()))
    times: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in arms}
    for _ in range(args.repeats):
        for name, argv, root in arms:
            times[name].append(run_once(argv, root=root))

    def median(name: str, i: int) -> float:
        return statistics.median(t[i] for t in times[name])

    print(f"median of {args.repeats} rounds, arms interleaved; load average {os.getloadavg()[0]:.1f}")
    print(f"{'command':34} {'wall s':>7} {'CPU s':>7}")
    for name, _, _ in arms:
        print(f"{name:34} {median(name, 0):7.2f} {median(name, 1):7.2f}")
    floor = median(FLOOR[0], 1)
    print("   ".join(f"{name}: {median(name, 1) - floor:+.2f} CPU-s over the floor" for name in COMMANDS))
    if args.before is not None:
        print(
            "   ".join(
                f"{name}: before / after {median(f'{name} (before)', 1) / median(name, 1):.1f}x CPU"
                for name in COMMANDS
            )
        )
    slowest = max(COMMANDS, key=lambda name: median(name, 1))
    print(f"slowest: {slowest}: cpu={median(slowest, 1):.2f}s wall={median(slowest, 0):.2f}s (goal 0.50 s)")


if __name__ == "__main__":
    main()
