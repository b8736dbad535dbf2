"""Statistics of the report: per method × metric mean ± SE, a seeded bootstrap CI, paired differences, ranks.

Mean ± SE and the paired difference to the random control are :func:`lit_xai.callbacks.summary.summarise` (the
same numbers the evaluation callback prints; ``SE = std(ddof=1)/√n``, significant when ``|Δ| > 2 SE``). Added here:

- a percentile bootstrap CI of each mean (Efron & Tibshirani 1993, §13.3), resampling images with a seeded
  generator, all resamples in one tensor operation;
- the paired difference between every two methods on the same images, ``d_i = s_a(i) − s_b(i)``;
- ranks with ties within noise: ``rank(m) = 1 + #{m' significantly better than m}`` (paired ``|Δ| > 2 SE``, the
  callback's rule), so methods whose differences are within noise share a rank, and rank 1 means "no method is
  significantly better". Our choice of rule (competition ranking over significant wins), stated in docs/report.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from lit_xai.callbacks.summary import SIGNIFICANCE_SE, SummaryRow, standard_error, summarise


@dataclass
class PairedDifference:
    """``mean(s_a − s_b) ± SE`` over the same images, and whether ``a`` is significantly better."""

    metric: str
    a: str
    b: str
    diff: float
    se: float | None
    a_better: bool
    b_better: bool

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def bootstrap_ci(values: Tensor, resamples: int, confidence: float, seed: int) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean: ``resamples`` draws of n images with replacement (seeded)."""
    values = values.double().flatten()
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(values.numel(), (resamples, values.numel()), generator=generator)
    means = values[index].mean(1)
    tail = (1 - confidence) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=means.dtype))
    return float(low), float(high)


def paired(metric: str, a: str, b: str, sa: Tensor, sb: Tensor, higher_is_better: bool | None) -> PairedDifference:
    """The paired difference ``a − b`` and which one (if any) is significantly better."""
    d = sa.double() - sb.double()
    diff, se = float(d.mean()), standard_error(d)
    significant = se is not None and abs(diff) > SIGNIFICANCE_SE * se
    a_better = significant and higher_is_better is not None and (diff > 0) == higher_is_better
    b_better = significant and higher_is_better is not None and (diff > 0) != higher_is_better
    return PairedDifference(metric, a, b, diff, se, bool(a_better), bool(b_better))


def pairwise(metric: str, scores: dict[str, Tensor], higher_is_better: bool | None) -> list[PairedDifference]:
    """Every ordered pair of methods (a before b in ``scores``' order)."""
    names = list(scores)
    return [paired(metric, a, b, scores[a], scores[b], higher_is_better)
            for i, a in enumerate(names) for b in names[i + 1 :]]


def ranks(names: list[str], differences: list[PairedDifference]) -> dict[str, int]:
    """``1 + #{methods significantly better}`` per method (ties: differences within noise)."""
    beaten_by = dict.fromkeys(names, 0)
    for d in differences:
        if d.a_better:
            beaten_by[d.b] += 1
        if d.b_better:
            beaten_by[d.a] += 1
    return {name: 1 + count for name, count in beaten_by.items()}


@dataclass
class MetricReport:
    """Everything the page shows for one metric column."""

    family: str
    metric: str
    higher_is_better: bool | None
    rows: list[SummaryRow]
    differences: list[PairedDifference]
    ranks: dict[str, int]
    ci: dict[str, tuple[float, float]]


def metric_report(family: str, metric: str, scores: dict[str, Tensor], higher_is_better: bool | None,
                  control: str, bootstrap: int, confidence: float, seed: int) -> MetricReport:
    """Summary rows (mean ± SE, Δ vs control), all pairwise differences, ranks and optional bootstrap CIs, over the
    images every method scored (a NaN marks an image the metric's protocol skips)."""
    valid = torch.stack([s.double() for s in scores.values()]).isfinite().all(0)
    scores = {m: s[valid] for m, s in scores.items()}
    rows = summarise({m: {metric: float(s.double().mean())} for m, s in scores.items()},
                     {m: {metric: s} for m, s in scores.items()}, {metric: higher_is_better}, {metric: metric},
                     control=control)
    differences = pairwise(metric, scores, higher_is_better)
    ranking = ranks(list(scores), differences) if higher_is_better is not None else {}
    ci = {m: bootstrap_ci(s, bootstrap, confidence, seed) for m, s in scores.items()} if bootstrap else {}
    return MetricReport(family, metric, higher_is_better, rows, differences, ranking, ci)
