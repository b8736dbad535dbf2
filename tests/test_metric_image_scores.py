"""Batched per-image results (issue 16): ``image_results``/``image_scores`` of Sensitivity-N, the randomisation
cascade, EHR and the pointing game equal ``update`` + ``compute`` on each image alone, leave the state untouched, and
are what the report's cells and the callback's paired statistics use (one batched call, no per-image loop)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import lit_xai.report.cells as report_cells
from lit_xai.callbacks.summary import summarise
from lit_xai.metrics import EffectiveHeatRatio, ParameterRandomisation, PointingGame, SensitivityN, build_metric
from lit_xai.metrics.image_scores import PerImageMetric


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 12 * 12, 3)).double()


def _input_x_gradient(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    with torch.enable_grad():
        x = inputs.detach().clone().requires_grad_(True)
        (gradient,) = torch.autograd.grad(model(x).gather(1, target[:, None]).sum(), x)
    return (x * gradient).detach()


def _case() -> dict[str, torch.Tensor]:
    """Six 12×12 images, input × gradient maps, boxes (image 1's covers > 33 %) and masks."""
    generator = torch.Generator().manual_seed(5)
    inputs = torch.rand(6, 3, 12, 12, generator=generator, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 0, 1, 2])
    boxes = torch.tensor([[0, 0, 4, 4], [0, 0, 12, 12], [3, 2, 9, 6], [6, 6, 12, 12], [1, 7, 5, 11], [2, 2, 7, 7]])
    masks = torch.zeros(6, 1, 12, 12, dtype=torch.bool)
    for b, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        masks[b, 0, y0:y1, x0:x1] = True
    maps = _input_x_gradient(_model(), inputs, target)
    return {"inputs": inputs, "target": target, "maps": maps, "boxes": boxes, "masks": masks}


#: the four metrics that lacked a batched image_scores, small settings
FACTORIES = {
    "sensitivity_n": lambda: SensitivityN(num_n=4, num_masks=8),
    "randomisation": lambda: ParameterRandomisation(max_steps=3, include_original=True),
    "ehr": lambda: EffectiveHeatRatio(normalize="max", channel_reduction="abs_sum"),
    "pointing_game": lambda: PointingGame(ties="any"),
    "pointing_game_boxes": lambda: PointingGame(tolerance=2),
}


def _extras(name: str, data: dict[str, torch.Tensor], index: slice) -> dict[str, object]:
    """What each metric is given: the method; boxes (EHR, boxes-only pointing game) or masks (pointing game)."""
    return {"method": _input_x_gradient,
            "boxes": data["boxes"][index] if name in ("ehr", "pointing_game_boxes") else None,
            "masks": data["masks"][index] if name == "pointing_game" else None}


@pytest.mark.parametrize("name", list(FACTORIES))
def test_batched_results_equal_each_image_alone(name: str) -> None:
    """Row b of ``image_results`` (score and curves) equals ``update`` + ``compute`` on image b alone; an image the
    protocol skips (EHR: image 1's box covers the whole image) scores NaN with a NaN curve."""
    data, model = _case(), _model()
    metric = FACTORIES[name]()
    everything = _extras(name, data, slice(None))
    batched = metric.image_results(model, data["inputs"], data["target"], data["maps"], **everything)
    assert batched["score"].shape == (6,)
    assert isinstance(metric, PerImageMetric)
    for b in range(6):
        single = FACTORIES[name]()
        one = slice(b, b + 1)
        single.update(model, data["inputs"][one], data["target"][one], data["maps"][one], **_extras(name, data, one))
        if name == "ehr" and b == 1:
            assert single.count == 0 and math.isnan(float(batched["score"][b]))
            assert batched["curve/ehr"][b].isnan().all()
            continue
        expected = single.results()
        torch.testing.assert_close(batched["score"][b], expected["score"].to(batched["score"]), rtol=1e-5, atol=1e-6)
        curves = [key for key in expected if key.startswith("curve/")]
        assert sorted(curves) == sorted(key for key in batched if key.startswith("curve/"))
        for key in curves:
            torch.testing.assert_close(batched[key][b], expected[key].to(batched[key]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_update_keeps_the_batch_scores_and_image_results_leaves_the_state(name: str) -> None:
    """``last_image_scores`` of an update equals ``image_scores`` on the batch (the callback needs no second pass),
    the metric's score is their mean over the images it counted, and ``image_results`` changes no state."""
    data, model = _case(), _model()
    metric = FACTORIES[name]()
    everything = _extras(name, data, slice(None))
    metric.update(model, data["inputs"], data["target"], data["maps"], **everything)
    before = {key: value.clone() for key, value in metric.results().items()}
    scores = metric.image_scores(model, data["inputs"], data["target"], data["maps"], **everything)
    torch.testing.assert_close(metric.last_image_scores, scores, equal_nan=True)
    torch.testing.assert_close(scores.nanmean(), before["score"].to(scores), rtol=1e-5, atol=1e-6)
    metric._computed = None  # torchmetrics caches compute(); recompute from the states
    for key, value in metric.results().items():
        torch.testing.assert_close(value, before[key])


def test_image_results_name_what_is_missing() -> None:
    data, model = _case(), _model()
    with pytest.raises(ValueError, match="needs boxes"):
        EffectiveHeatRatio().image_results(model, data["inputs"], data["target"], data["maps"])
    with pytest.raises(ValueError, match="needs method"):
        ParameterRandomisation().image_scores(model, data["inputs"], data["target"], data["maps"])
    with pytest.raises(ValueError, match="masks or boxes"):
        PointingGame().image_scores(model, data["inputs"], data["target"], data["maps"])


@pytest.mark.parametrize("name", ["sensitivity_n", "randomisation", "ehr", "pointing_game", "deletion"])
def test_report_cells_use_one_batched_call(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The report scores a cell with one ``image_results`` call (no per-image update), and keeps its curves."""
    data, model = _case(), _model()
    kwargs = {"deletion": {"baseline": "zero", "num_steps": 4}, "ehr": {"normalize": "max"},
              "sensitivity_n": {"num_n": 4, "num_masks": 8}, "randomisation": {"max_steps": 2}}.get(name, {})
    metric = build_metric(name, **kwargs)
    calls = []
    original = metric.image_results
    monkeypatch.setattr(metric, "image_results", lambda *a, **k: calls.append(1) or original(*a, **k))
    monkeypatch.setattr(metric, "update", lambda *a, **k: pytest.fail("the report must not update per image"))
    extras = {"masks": data["masks"], "boxes": data["boxes"]}
    curves: dict = {}
    scores = report_cells.image_scores(metric, model, data["inputs"], data["target"], data["maps"], _input_x_gradient,
                                       extras, curves)
    assert calls == [1] and scores.shape == (6,) and scores.dtype == torch.float64
    if name == "pointing_game":
        assert curves == {}
    else:
        assert all(values.shape[0] == 6 for values in curves["values"].values())
        assert curves["axis"].shape[0] == next(iter(curves["values"].values())).shape[1]


def test_summary_leaves_out_images_a_protocol_skips() -> None:
    """NaN per-image scores (EHR's skipped images) are left out of the SE and the paired difference."""
    nan = float("nan")
    per_image = {"m": {"ehr": torch.tensor([0.5, nan, 0.7, 0.9])},
                 "random": {"ehr": torch.tensor([0.1, nan, 0.2, 0.2])}}
    rows = summarise({"m": {"ehr": 0.7}, "random": {"ehr": 1 / 6}}, per_image, {"ehr": True}, {"ehr": "ehr"})
    row = next(r for r in rows if r.method == "m")
    assert row.n == 3 and math.isfinite(row.se)
    torch.testing.assert_close(torch.tensor(row.diff), torch.tensor([0.4, 0.5, 0.7]).mean(), check_dtype=False)
    assert math.isfinite(row.diff_se)
