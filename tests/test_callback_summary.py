"""The evaluation summary (direction, n, mean ± SE, paired Δ to the control) and the figures (Captum's display scaling,
overlays, ground truth, no pyplot state)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from captum.attr._utils.visualization import _normalize_attr
from matplotlib.patches import Rectangle
from scipy import stats

from lit_xai.callbacks import figures
from lit_xai.callbacks.summary import format_table, summarise


def _scores(seed: int = 0, n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    control = torch.rand(n, generator=generator, dtype=torch.float64)
    return control - 0.05 + 0.02 * torch.randn(n, generator=generator, dtype=torch.float64), control


def test_paired_difference_and_standard_errors_match_scipy() -> None:
    """SE of the mean = scipy.stats.sem; paired Δ / SE(Δ) = the paired t statistic of scipy.stats.ttest_rel
    (tolerance 1e-12, float64)."""
    method, control = _scores()
    rows = summarise(
        {"m": {"deletion": float(method.mean())}, "random": {"deletion": float(control.mean())}},
        {"m": {"deletion": method}, "random": {"deletion": control}},
        {"deletion": False}, {"deletion": "deletion"},
    )
    row = next(r for r in rows if r.method == "m")
    assert row.n == 40 and row.direction == "↓"
    assert row.se == pytest.approx(stats.sem(method.numpy()), rel=1e-12)
    assert row.diff == pytest.approx(float((method - control).mean()), rel=1e-12)
    paired_t = stats.ttest_rel(method.numpy(), control.numpy()).statistic
    assert row.diff / row.diff_se == pytest.approx(paired_t, rel=1e-12)
    assert row.verdict == "better"  # lower Deletion, |Δ| ≫ 2 SE
    assert next(r for r in rows if r.method == "random").verdict == "control"


def test_verdicts_follow_direction_and_significance() -> None:
    method, control = _scores()
    rows = summarise(
        {"m": {"a": 0.0, "b": 0.0}, "random": {"a": 0.0, "b": 0.0}},
        {"m": {"a": method, "b": control + 1e-4 * torch.randn(40, dtype=torch.float64)},
         "random": {"a": control, "b": control}},
        {"a": True, "b": True}, {"a": "insertion", "b": "insertion"},
    )
    verdict = {r.metric: r.verdict for r in rows if r.method == "m"}
    assert verdict == {"a": "worse", "b": "n.s."}  # Δ < 0 on a higher-is-better metric; noise only


def test_table_marks_the_control_and_the_expected_randomisation_winner() -> None:
    method, control = _scores()
    rows = summarise(
        {"m": {"rand": 0.5}, "random": {"rand": 0.1}}, {}, {"rand": False}, {"rand": "randomisation"},
        counts={"m": {"rand": 7}, "random": {"rand": 7}},
    )
    text = format_table(rows, "title")
    assert "worst by construction" in text and "↓" in text and " 7 " in text
    assert next(r for r in rows if r.method == "m").diff is None  # no per-image scores: no paired Δ claimed


@pytest.mark.parametrize("signed", [False, True])
def test_display_scaling_equals_captum(signed: bool) -> None:
    """Captum's visualize_image_attr scaling (cumulative-sum threshold at 100 − outlier_perc %, clip to [−1, 1]);
    tolerance 1e-5 (float32 here, float64 sort in Captum's NumPy)."""
    generator = torch.Generator().manual_seed(1)
    maps = torch.randn(3, 2, 12, 12, generator=generator) ** 3  # heavy tails: clipping matters
    view = "signed" if signed else "magnitude"
    ours = figures.display_maps(maps, (12, 12), view, outlier_perc=2.0)
    reduced = maps.sum(1) if signed else maps.abs().sum(1)
    for k in range(3):
        expected = _normalize_attr(reduced[k].double().numpy(), "all" if signed else "absolute_value", 2)
        np.testing.assert_allclose(ours[k].numpy(), expected, atol=1e-5)
    assert float(ours.abs().amax()) == 1.0 and (ours.abs() == 1).float().mean() > 0.005  # the outliers are clipped


def test_grid_draws_overlays_colourbar_captions_and_ground_truth() -> None:
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    maps = {"a": torch.randn(2, 3, 16, 16), "b": torch.rand(2, 1, 4, 4)}
    boxes = torch.tensor([[2, 3, 9, 12], [0, 0, 16, 16]])
    masks = torch.zeros(2, 1, 16, 16)
    masks[:, :, 4:8, 4:8] = 1
    fig = figures.heatmap_grid(images, maps, ["#0 y=disk\nŷ=disk (0.93)", "#1"], boxes=boxes, masks=masks)
    cells = [ax for ax in fig.axes if ax.get_title() or ax.images]
    heat_cells = [ax for ax in cells if len(ax.images) == 2]  # grey input under the map
    assert len(heat_cells) == 4
    assert sum(isinstance(p, Rectangle) and not p.get_fill() for ax in cells for p in ax.patches) == 6
    assert len(fig.axes) == 2 * 3 + 1  # one shared colour bar
    assert "(0.93)" in fig.axes[0].get_ylabel()
    assert figures.to_png(fig)[:4] == b"\x89PNG"


def test_curves_have_labels_and_auc_in_the_legend() -> None:
    fig = figures.curves_figure("t", torch.linspace(0, 1, 5), {"g": torch.rand(5)}, "fraction", "probability",
                                legend_values={"g": 0.123}, value_name="AUC")
    ax = fig.axes[0]
    assert ax.get_ylabel() == "probability" and ax.get_legend().get_texts()[0].get_text() == "g (AUC 0.1230)"


def test_figures_leave_the_matplotlib_backend_alone() -> None:
    code = (
        "import matplotlib; before = matplotlib.get_backend(); "
        "import torch; from lit_xai.callbacks import figures; import lit_xai.callbacks; "
        "figures.to_png(figures.heatmap_grid(torch.rand(1, 1, 8, 8), {'m': torch.rand(1, 1, 8, 8)})); "
        "assert matplotlib.get_backend() == before, (before, matplotlib.get_backend())"
    )
    env = {**os.environ, "MPLBACKEND": "svg"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
