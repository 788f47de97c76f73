"""Run every benchmark (`make bench`); each prints figures against its own baseline."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = ["bench.wire_cost", "bench.hub_ingest", "bench.device_idle"]


def main() -> int:
    failed = 0
    for name in BENCHMARKS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            print(f"(skipping {name}: not present)")  # noqa: T201
            continue
        module.main()
        print()  # noqa: T201
    return failed


if __name__ == "__main__":
    sys.exit(main())
