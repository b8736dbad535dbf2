"""Method × metric summary of an evaluation: direction, n, mean ± standard error, paired difference to the control.

The paired difference of a method to the random control uses the per-image scores of both on the same images:
``d_i = s_method(i) − s_control(i)``, reported as ``mean(d) ± SE(d)`` with ``SE = std(d, ddof=1) / √n`` (the
standard error of a paired mean, e.g. Rice, *Mathematical Statistics and Data Analysis*, §11.3). A difference is
marked significant when ``|mean(d)| > 2 SE`` (≈ a two-sided 95 % normal interval), and *better*/*worse* by the
metric's ``higher_is_better``. The control's own row says ``control``. On the parameter-randomisation sanity check the
random control is *expected* to score best (its map ignores the weights), so the table says so instead of ranking.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from torch import Tensor

#: |paired mean| / SE above which a difference is called significant (two-sided ≈ 95 % normal interval)
SIGNIFICANCE_SE = 2.0
#: registered metric names on which the random control scores worst by construction: its map is a function of the
#: seed and the image only (lit_xai.attribution.noise), so randomising the weights leaves it unchanged (similarity 1)
CONTROL_IGNORES_WEIGHTS = frozenset({"randomisation"})


@dataclass
class SummaryRow:
    """One (method, metric) cell of the summary."""

    method: str
    metric: str
    direction: str  # "↑" (higher is better), "↓" or "" when the metric declares none
    n: int | None
    mean: float
    se: float | None
    diff: float | None = None  # paired mean difference to the control
    diff_se: float | None = None
    verdict: str = ""  # "control", "better", "worse", "n.s." or a note

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def direction_arrow(higher_is_better: bool | None) -> str:
    """``↑`` / ``↓`` / ``""`` from a torchmetrics ``higher_is_better`` flag."""
    return "" if higher_is_better is None else ("↑" if higher_is_better else "↓")


def standard_error(values: Tensor) -> float | None:
    """``std(values, ddof=1) / √n``; ``None`` below two values."""
    values = values.double().flatten()
    if values.numel() < 2:
        return None
    return float(values.std(correction=1) / math.sqrt(values.numel()))


def summarise(
    scores: Mapping[str, Mapping[str, float]],
    image_scores: Mapping[str, Mapping[str, Tensor]],
    directions: Mapping[str, bool | None],
    metric_names: Mapping[str, str],
    counts: Mapping[str, Mapping[str, int]] | None = None,
    control: str | None = "random",
) -> list[SummaryRow]:
    """Rows for every (method, metric) in ``scores``.

    Args:
        scores: method → metric label → the metric's own score (``compute()["score"]``).
        image_scores: method → metric label → per-image scores ``[n]`` in the same image order for every method
            (missing where the metric has no per-image score: then SE and the paired difference stay empty; NaN
            where the protocol skips an image, e.g. EHR's large boxes: left out of the SE and the paired difference).
        directions: metric label → ``higher_is_better``.
        metric_names: metric label → registered metric name (to recognise e.g. randomisation).
        counts: method → metric label → images the metric counted (used where there are no per-image scores).
        control: the control method's label (``None``: no paired differences).
    """
    rows = []
    for method, per_metric in scores.items():
        for metric, score in per_metric.items():
            raw = image_scores.get(method, {}).get(metric)
            per_image = None if raw is None else raw[~raw.isnan()]  # NaN: an image the protocol skips (EHR)
            n = int(per_image.numel()) if per_image is not None else (counts or {}).get(method, {}).get(metric)
            row = SummaryRow(
                method, metric, direction_arrow(directions.get(metric)), n, float(score),
                standard_error(per_image) if per_image is not None else None,
            )
            if method == control:
                row.verdict = "control"
                if metric_names.get(metric) in CONTROL_IGNORES_WEIGHTS:
                    row.verdict = "control (worst by construction: its map ignores the weights)"
            elif control is not None:
                reference = image_scores.get(control, {}).get(metric)
                if raw is not None and reference is not None and reference.shape == raw.shape:
                    paired = raw.double() - reference.double()
                    paired = paired[~paired.isnan()]
                    row.diff, row.diff_se = float(paired.mean()), standard_error(paired)
                    row.verdict = _verdict(row.diff, row.diff_se, directions.get(metric))
            rows.append(row)
    return rows


def _verdict(diff: float, se: float | None, higher_is_better: bool | None) -> str:
    if se is None or not abs(diff) > SIGNIFICANCE_SE * se:
        return "n.s."
    if higher_is_better is None:
        return "significant"
    return "better" if (diff > 0) == higher_is_better else "worse"


def _pm(value: float | None, se: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:+.4f} ± {se:.4f}" if se is not None else f"{value:+.4f}"


def _mean_se(value: float, se: float | None) -> str:
    return f"{value:.4f} ± {se:.4f}" if se is not None else f"{value:.4f}"


def format_table(rows: Sequence[SummaryRow], title: str, control: str | None = "random") -> str:
    """A plain-text table, one line per (method, metric), grouped by metric."""
    header = ("metric", "dir", "method", "n", "mean ± SE", f"Δ vs {control} ± SE" if control else "Δ", "verdict")
    body = [
        (r.metric, r.direction, r.method, "" if r.n is None else str(r.n), _mean_se(r.mean, r.se),
         _pm(r.diff, r.diff_se), r.verdict)
        for r in sorted(rows, key=lambda r: r.metric)
    ]
    widths = [max(len(line[i]) for line in (header, *body)) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [title, fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*line).rstrip() for line in body]
    lines.append(
        f"↑/↓: higher/lower is better; Δ: paired mean difference over the same images; better/worse: "
        f"|Δ| > {SIGNIFICANCE_SE:g} SE, else n.s."
    )
    return "\n".join(lines)

