"""`make bench`: every figure of the hub's and the wearable's costs, against bare baselines
measured in the same run, PASS/FAIL per goal, written to bench/results.json.

    .venv/bin/python -m bench                 # everything, under 10 minutes on 2 cores
    .venv/bin/python -m bench --only ingest   # one part: wire, ingest, latency, device
    .venv/bin/python -m bench --devices 1000  # a smaller fleet (a quick look, not the goals)

Exit status 1 if a goal failed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from bench import device_idle, ingest, latency, wire_cost
from bench.env import bench_env, progress
from bench.results import RESULTS, Results

PARTS = ("wire", "ingest", "latency", "device")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=PARTS, help="run only this part")
    parser.add_argument("--devices", type=int, default=10_000, help="enrolled wearables")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (logs)")
    args = parser.parse_args(argv)
    parts = args.only or list(PARTS)
    results = Results()
    started = time.monotonic()
    if "wire" in parts:
        wire_cost.main()
    with tempfile.TemporaryDirectory(prefix="vigil-bench-") as scratch:
        tmp = args.keep or scratch
        if {"ingest", "latency"} & set(parts):
            with bench_env(Path(tmp), devices=args.devices) as env:
                rates = ingest.main(env, results) if "ingest" in parts else {}
                if "latency" in parts:
                    latency.main(env, results, capacity=rates.get("sqlite"))
        if "device" in parts:
            device_idle.run(results, Path(tmp) / "device")
    results.write(args.out)
    progress(f"done in {time.monotonic() - started:.0f} s; figures in {args.out}")
    print("\n== make bench ==")  # noqa: T201
    print(results.table())  # noqa: T201
    failed = results.failed()
    if failed:
        print(f"\n{len(failed)} goal(s) FAIL: " + "; ".join(f.name.strip() for f in failed))  # noqa: T201
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
