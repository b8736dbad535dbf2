"""One measurement protocol for every benchmark script: side by side, interleaved, paired, with stated targets.

- **Warm-up on every side**: each case runs ``warmup`` times before any timing (first-call allocations, oneDNN
  primitive caches and lazy imports otherwise land on whichever side runs first). A case that loops over many equal
  chunks may name a cheaper warm-up call that runs the same operators at the same shapes (e.g. the case on one image).
- **Rotated interleaving**: round ``r`` runs the cases starting at position ``r mod n``, so no case always follows
  the same neighbour (cache and frequency effects of the previous case are spread evenly).
- **Paired ratios**: a ratio ``a / b`` is computed per round from the two times of the same round, then summarised
  by the median and the inter-quartile spread. On a shared machine the load drifts between rounds but rarely within
  one round, so paired per-round ratios are far steadier than a ratio of two medians.
- **The floor** of an input-space method is one forward plus ``torch.autograd.grad`` with respect to the *input*
  with every parameter frozen (no weight gradients), times the passes the method needs.
- **Memory** is the growth of the peak resident set size over the RSS after setup, in a fresh Python process whose
  peak is reset after setup (Linux ``/proc/self/clear_refs``): in-process readings after other work report 0, and
  ``getrusage``'s ``ru_maxrss`` carries the parent's peak across fork + exec, so a large parent hides the growth.
- **Targets**: every row of our code states its target ratio (a peer's row or a hand-tuned reference setting says
  that it has none); :func:`markdown_table` prints ``MISS`` when the median exceeds the target.
- **Machine state**: :func:`machine_state` (load average, date) goes next to every table: on a shared machine the
  load is part of the result.

Equal threads on every side: the caller sets ``torch.set_num_threads`` once for the whole comparison.
"""

from __future__ import annotations

import datetime
import json
import math
import os
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


def interleaved_times(
    cases: dict[str, Callable[[], object]], rounds: int, warmup: int = 1,
    warmups: dict[str, Callable[[], object]] | None = None, min_seconds: float = 0.0,
) -> dict[str, list[float]]:
    """Per-round times of every case (seconds per call): all cases warmed up, then ``rounds`` rounds in rotated order.

    ``warmups[name]`` (optional) replaces case ``name``'s own call in the warm-up: a cheaper call of the same operators
    at the same shapes. Every case is warmed up ``warmup`` times either way. ``min_seconds`` > 0: a case whose call
    takes less (one timed probe call after the warm-up; none for a case with a cheaper warm-up, which is expensive)
    is called ``⌈min_seconds / call⌉`` times back to back per round and the mean is its time: a 20 ms pass timed
    once per round spreads ±10–20 % on a shared machine.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be ≥ 1, got {rounds}")
    unknown = set(warmups or {}) - set(cases)
    if unknown:
        raise ValueError(f"warm-ups for unknown cases: {sorted(unknown)}")
    names = list(cases)
    for name in names:
        for _ in range(warmup):
            (warmups or {}).get(name, cases[name])()
    repeats = {name: 1 for name in names}
    if min_seconds > 0:
        for name in set(names) - set(warmups or {}):  # a case with a cheaper warm-up is expensive: timed once
            repeats[name] = max(1, math.ceil(min_seconds / max(timed(cases[name]), 1e-9)))
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for i in range(len(names)):
            name = names[(r + i) % len(names)]
            call, count = cases[name], repeats[name]
            times[name].append(timed(lambda call=call, count=count: [call() for _ in range(count)]) / count)
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


def machine_state() -> str:
    """``"2026-11-30 14:40 UTC, load average 1.52 1.10 0.98 (2 CPUs)"``: what to print next to a table."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{now}, load average {load} ({os.cpu_count()} CPUs)"


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
import json, re, sys
sys.path.insert(0, {root!r})
import torch
torch.set_num_threads({threads})


def status_kib(key):
    return int(re.search(key + r":\\s+(\\d+) kB", open("/proc/self/status").read())[1])


{setup}
with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")  # reset this process's peak RSS (VmHWM) to its current RSS
before = status_kib("VmRSS")
{run}
print(json.dumps({{"peak_growth_mib": (status_kib("VmHWM") - before) / 1024}}))
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
    #: why a row has no target: "peer" (another library's row), "reference setting" (a hand-tuned alternative)
    untargeted: str = ""

    @property
    def verdict(self) -> str:
        if self.target is None:
            return ""
        return "ok" if self.ratio.median <= self.target else "MISS"

    @property
    def target_text(self) -> str:
        if self.target is not None:
            return f"≤ {self.target:g}"
        return f"none ({self.untargeted})" if self.untargeted else "none"

    def as_dict(self) -> dict[str, object]:
        return {
            "setting": self.setting, "work": self.work, "reference": self.reference,
            "median": self.ratio.median, "low": self.ratio.low, "high": self.ratio.high,
            "target": self.target, "untargeted": self.untargeted, "verdict": self.verdict, "note": self.note,
            **self.extra,
        }

    @classmethod
    def from_dict(cls, record: dict[str, object]) -> Row:
        """The inverse of :meth:`as_dict` (rows kept from an earlier run's JSON)."""
        known = {"setting", "work", "reference", "median", "low", "high", "target", "untargeted", "verdict", "note"}
        return cls(
            str(record["setting"]), str(record["work"]), str(record["reference"]),
            Ratio(float(record["median"]), float(record["low"]), float(record["high"])),  # type: ignore[arg-type]
            None if record["target"] is None else float(record["target"]),  # type: ignore[arg-type]
            str(record.get("note", "")),
            {k: float(v) for k, v in record.items() if k not in known},  # type: ignore[arg-type]
            str(record.get("untargeted", "")),
        )


def markdown_table(rows: Sequence[Row]) -> str:
    """Rows as a markdown table; a row over its target says MISS."""
    lines = [
        "| setting | work | / reference | median [IQR] | target | |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        note = f"{row.verdict} {row.note}".strip()
        lines.append(f"| {row.setting} | {row.work} | {row.reference} | {row.ratio} | {row.target_text} | {note} |")
    return "\n".join(lines)
