"""The figures of one `make bench` run: each against a baseline of the same run, with its goal.

A figure's goal is a bound on its ratio to the baseline (`ratio <= 2`), on its
value (`p99 < 40 ms`), or none (reported only). `bench/results.json` gets every
figure with its verdict; the table printed at the end is the issue's table.
"""

from __future__ import annotations

import json
import operator
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results.json"
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "<": operator.lt,
    ">": operator.gt,
}


@dataclass(frozen=True)
class Goal:
    """`on` is "ratio" or "value"; e.g. Goal("ratio", ">=", 0.7)."""

    on: str
    op: str
    bound: float

    def __post_init__(self) -> None:
        if self.on not in ("ratio", "value") or self.op not in _OPS:
            raise ValueError(f"a goal is ratio|value with one of {list(_OPS)}, got {self}")

    def met(self, value: float, ratio: float) -> bool:
        return _OPS[self.op](ratio if self.on == "ratio" else value, self.bound)

    def describe(self, unit: str) -> str:
        return f"{self.on} {self.op} {self.bound:g}{'x' if self.on == 'ratio' else ' ' + unit}"


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str
    baseline: float
    baseline_name: str
    goals: tuple[Goal, ...] = ()
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else float("inf")

    @property
    def verdict(self) -> str:
        if not self.goals:
            return "report"
        return "PASS" if all(g.met(self.value, self.ratio) for g in self.goals) else "FAIL"

    def line(self) -> str:
        goal = " and ".join(g.describe(self.unit) for g in self.goals) or "-"
        return (
            f"{self.name:<58} {self.value:10.2f} {self.unit:<6} "
            f"base {self.baseline:10.2f}  {self.ratio:7.2f}x  {goal:<26} {self.verdict}"
        )


@dataclass
class Results:
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def add(self, figure: Figure) -> None:
        self.figures.append(figure)
        print(figure.line(), flush=True)  # noqa: T201 - a benchmark's output is its report
        if figure.note:
            print(f"    {figure.note}", flush=True)  # noqa: T201

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}", flush=True)  # noqa: T201

    def failed(self) -> list[Figure]:
        return [f for f in self.figures if f.verdict == "FAIL"]

    def write(self, path: Path = RESULTS) -> None:
        doc = {
            "machine": {
                "cpus": _cpus(),
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "seconds": round(time.monotonic() - self.started, 1),
            "figures": [
                {
                    **asdict(f),
                    "goals": [g.describe(f.unit) for g in f.goals],
                    "ratio": round(f.ratio, 3),
                    "verdict": f.verdict,
                }
                for f in self.figures
            ],
            "notes": self.notes,
        }
        path.write_text(json.dumps(doc, indent=2) + "\n")

    def table(self) -> str:
        return "\n".join(f.line() for f in self.figures)


def _cpus() -> int:
    import os  # noqa: PLC0415 - only for the report

    return os.cpu_count() or 0
