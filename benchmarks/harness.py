"""One measurement protocol for every benchmark script: side by side, interleaved, paired, with stated targets.

- **Warm-up on every side**: each case runs ``warmup`` times before any timing (first-call allocations, oneDNN
  primitive caches and lazy imports otherwise land on whichever side runs first).
- **Rotated interleaving**: round ``r`` runs the cases starting at position ``r mod n``, so no case always follows
  the same neighbour (cache and frequency effects of the previous case are spread evenly).
- **Paired ratios**: a ratio ``a / b`` is computed per round from the two times of the same round, then summarised
  by the median and the inter-quartile spread. On a shared machine the load drifts between rounds but rarely within
  one round, so paired per-round ratios are far steadier than a ratio of two medians.
- **The floor** of an input-space method is one forward plus ``torch.autograd.grad`` with respect to the *input*
  with every parameter frozen (no weight gradients), times the passes the method needs.
- **Memory** is the growth of the peak resident set size in a fresh Python process (a child process inherits the
  parent's peak reading, so measuring in-process after other work reports 0).
- **Targets**: a row may carry a target ratio; :func:`markdown_table` prints ``MISS`` when the median exceeds it.

Equal threads on every side: the caller sets ``torch.set_num_threads`` once for the whole comparison.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn


def timed(fn: Callable[[], object]) -> float:
    """Wall-clock seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved_times(cases: dict[str, Callable[[], object]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Per-round times of every case: all cases warmed up, then ``rounds`` rounds in rotated order."""
    if rounds < 1:
        raise ValueError(f"rounds must be ≥ 1, got {rounds}")
    names = list(cases)
    for name in names:
        for _ in range(warmup):
            cases[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for i in range(len(names)):
            name = names[(r + i) % len(names)]
            times[name].append(timed(cases[name]))
    return times


@dataclass(frozen=True)
class Ratio:
    """Median and inter-quartile range of per-round ratios."""

    median: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.median:.2f} [{self.low:.2f}–{self.high:.2f}]"


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float], scale: float = 1.0) -> Ratio:
    """Summary of ``numerator[r] / (scale · denominator[r])`` over rounds ``r``."""
    ratios = sorted(n / (scale * d) for n, d in zip(numerator, denominator, strict=True))
    if len(ratios) == 1:
        return Ratio(ratios[0], ratios[0], ratios[0])
    quartiles = statistics.quantiles(ratios, n=4, method="inclusive")
    return Ratio(statistics.median(ratios), quartiles[0], quartiles[2])


def input_gradient_floor(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> Callable[[], None]:
    """One forward + input-gradient backward with frozen parameters: the floor of one attribution pass."""

    def run() -> None:
        flags = [p.requires_grad for p in model.parameters()]
        for p in model.parameters():
            p.requires_grad_(False)
        try:
            x = inputs.detach().clone().requires_grad_(True)
            torch.autograd.grad(model(x).gather(1, target[:, None]).sum(), x)
        finally:
            for p, flag in zip(model.parameters(), flags):
                p.requires_grad_(flag)

    return run


def forward_floor(model: nn.Module, inputs: torch.Tensor) -> Callable[[], None]:
    """One gradient-free forward of ``inputs``: the floor unit of a perturbation metric."""

    def run() -> None:
        with torch.no_grad():
            model(inputs)

    return run


MEMORY_CHILD = """
import json, resource, sys
sys.path.insert(0, {root!r})
import torch
torch.set_num_threads({threads})
{setup}
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
{run}
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"peak_growth_mib": (after - before) / 1024}}))
"""


def peak_memory_growth(setup: str, run: str, root: str, threads: int = 1) -> float:
    """Peak-RSS growth (MiB) of ``run`` after ``setup``, measured in a fresh Python process."""
    code = MEMORY_CHILD.format(root=root, threads=threads, setup=setup, run=run)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["peak_growth_mib"])


@dataclass
class Row:
    """One line of a benchmark table: a ratio to a named reference, with an optional target."""

    setting: str
    work: str
    reference: str
    ratio: Ratio
    target: float | None = None
    note: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        if self.target is None:
            return ""
        return "ok" if self.ratio.median <= self.target else "MISS"

    def as_dict(self) -> dict[str, object]:
        return {
            "setting": self.setting, "work": self.work, "reference": self.reference,
            "median": self.ratio.median, "low": self.ratio.low, "high": self.ratio.high,
            "target": self.target, "verdict": self.verdict, "note": self.note, **self.extra,
        }


def markdown_table(rows: Sequence[Row]) -> str:
    """Rows as a markdown table; a row over its target says MISS."""
    lines = [
        "| setting | work | / reference | median [IQR] | target | |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        target = f"≤ {row.target:g}" if row.target is not None else ""
        note = f"{row.verdict} {row.note}".strip()
        lines.append(f"| {row.setting} | {row.work} | {row.reference} | {row.ratio} | {target} | {note} |")
    return "\n".join(lines)
