"""``curate build`` end to end as the input grows: rows/s per stage and peak memory of the build process.

The input is the first ``--records`` lines of a demo corpus grown 1×, 4× and 16× (fresh ids and text
per replica, so no cache or de-duplication makes a larger corpus cheaper per row); each size is built
by a fresh ``python -m curate build`` process whose peak resident memory is read from the kernel when
it exits. Per-stage rows/s come from the build's own timings (``OUT/.state/stages.json``: rows fed to a
stage over seconds spent in it). Memory should stay flat: the build holds one chunk at a time.

Two corpora (run with no arguments for the first):

    python bench/build.py                                   # pre-translated es/de/fr, every filter stage
    python bench/build.py --config examples/demo.yaml --records 32     # Apertium en → es, ca as well
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from corpus import ROOT, grow, machine


def run_build(config: Path, source: Path, out: Path, sets: list[str]) -> dict[str, Any]:
    """One build in a child process: its wall time, peak RSS and the stage timings it wrote."""
    command = [sys.executable, "-m", "curate", "build", str(config), "--input", str(source)]
    command += ["--out", str(out), "--no-progress", *(a for s in sets for a in ("--set", s))]
    start = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        msg = f"build failed ({status}): {child.stderr.read().decode()[-2000:] if child.stderr else ''}"
        raise RuntimeError(msg)
    manifest = json.loads((out / "manifest.json").read_text())
    peak_kib = usage.ru_maxrss if sys.platform != "darwin" else usage.ru_maxrss // 1024
    return {
        "seconds": seconds,
        "peak_mib": peak_kib / 1024,
        "read": sum(c["read"] for c in manifest["counts"].values()),
        "kept": sum(c["kept"] for c in manifest["counts"].values()),
        "chunks": len(list((out / ".state" / "chunks").glob("*.json"))),
        "stages": json.loads((out / ".state" / "stages.json").read_text()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=Path("examples/demo_pretranslated.yaml"))
    parser.add_argument("--records", type=int, default=None, help="first lines of the input (default all)")
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--chunk-size", type=int, default=64, help="write.chunk_size (groups per chunk)")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="more config overrides")
    args = parser.parse_args()

    config_path = ROOT / args.config  # relative paths are from the repository root, like the configs' own
    config = yaml.safe_load(config_path.read_text())
    source = ROOT / config["inputs"][0]
    sets = [f"write.chunk_size={args.chunk_size}", *args.sets]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for factor in args.factors:
            grown = grow(source, Path(tmp) / f"input-{factor}.jsonl", factor=factor, records=args.records)
            results[factor] = run_build(config_path, grown, Path(tmp) / f"out-{factor}", sets)

    stages = list(results[args.factors[0]]["stages"])
    print(f"machine: {machine()}")
    print(
        f"config: {args.config} ({config['translate']['backend']}, langs "
        f"{', '.join(config['langs'])}), input: {config['inputs'][0]}, first {args.records or 'all'} "
        f"lines grown by replication, {args.chunk_size} groups per chunk"
    )
    header = f"{'size':>5} {'rows read':>9} {'kept':>6} {'chunks':>6} {'wall s':>7} {'rows/s':>7}"
    print(header + "".join(f" {name + '/s':>13}" for name in stages) + f" {'peak RSS':>10}")
    for factor, r in results.items():
        line = f"{factor:>4}× {r['read']:9d} {r['kept']:6d} {r['chunks']:6d} {r['seconds']:7.1f} "
        line += f"{r['read'] / r['seconds']:7.0f}"
        line += "".join(f" {r['stages'][name]['rows_per_s'] or 0:13.0f}" for name in stages)
        print(line + f" {r['peak_mib']:7.0f} MiB")
    first, last = results[args.factors[0]], results[args.factors[-1]]
    print(
        f"{args.factors[-1] // args.factors[0]}× the input: peak RSS × {last['peak_mib'] / first['peak_mib']:.2f}, "
        f"wall time × {last['seconds'] / first['seconds']:.1f} (rows/s per stage: rows in / seconds in the stage)"
    )


if __name__ == "__main__":
    main()
