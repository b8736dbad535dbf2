"""Parameter randomisation against Quantus 0.6 (``MPRT``, its ``ssim``) on nets lit_xai does not ship.

``protocol="reset", seeding="quantus"`` with Quantus' seed randomises the same layers with the same draws as
``quantus.MPRT`` (``reset_parameters()`` of every module that has it, BatchNorm running statistics included, under
``torch.manual_seed(seed + 1)``), so every per-layer similarity is equal. Tolerance: 1e-6 absolute (the maps are
bitwise equal; Spearman differs only by float64 summation order and our float32 output).
"""

from __future__ import annotations

import numpy as np
import pytest
import quantus
import torch
from quantus.functions.similarity_func import ssim as quantus_ssim

from lit_xai.attribution import build_method
from lit_xai.metrics import ParameterRandomisation
from lit_xai.metrics.similarity import ssim

TOLERANCE = 1e-6
_gradient = build_method("gradient")


def _method(model: torch.nn.Module, inputs: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Saliency summed over channels, one map channel (so Quantus' C×H×W features are our H×W pixels)."""
    return _gradient(model, inputs, target).sum(1, keepdim=True)


def _explain_func(model, inputs, targets, **kwargs):  # Quantus' explain_func signature
    return _method(model, torch.as_tensor(inputs), torch.as_tensor(targets)).numpy()


def _quantus(net, inputs, target, maps, **kwargs) -> dict[str, list[float]] | list[float]:
    metric = quantus.MPRT(seed=42, layer_order="top_down", disable_warnings=True, **kwargs)
    return metric(model=net, x_batch=inputs.numpy(), y_batch=target.numpy(), a_batch=maps.numpy(),
                  explain_func=_explain_func, device="cpu", batch_size=len(inputs))


def _ours(net, inputs, target, maps, **kwargs) -> ParameterRandomisation:
    metric = ParameterRandomisation(protocol="reset", seeding="quantus", seed=42, include_original=True, **kwargs)
    metric.update(net, inputs, target, maps, method=_method)
    return metric


@pytest.mark.parametrize("absolute", [True, False])
def test_reset_protocol_reproduces_quantus_mprt_layer_by_layer(foreign_net, images, absolute: bool) -> None:
    inputs, target = images[:4], torch.tensor([0, 1, 2, 3])
    maps = _method(foreign_net, inputs, target)
    before = {k: v.clone() for k, v in foreign_net.state_dict().items()}
    expected = _quantus(foreign_net, inputs, target, maps, abs=absolute)
    for key, value in foreign_net.state_dict().items():
        assert torch.equal(value, before[key]), key  # Quantus randomises a deep copy
    ours = _ours(foreign_net, inputs, target, maps)
    assert ours.curve_ticks() == list(expected)  # "original", then the layers from the top down
    curve = ours.compute()["curve/spearman_abs" if absolute else "curve/spearman"]
    np.testing.assert_allclose(curve.numpy(), [np.mean(v) for v in expected.values()], rtol=0, atol=TOLERANCE)


def test_quantus_average_correlation_counts_the_unrandomised_model(reused_relu_net, images) -> None:
    """Quantus' ``return_average_correlation`` averages over the original model too: ``include_original=True``."""
    inputs, target = images[:4], torch.tensor([4, 3, 2, 1])
    maps = _method(reused_relu_net, inputs, target)
    expected = _quantus(reused_relu_net, inputs, target, maps, return_average_correlation=True)
    ours = _ours(reused_relu_net, inputs, target, maps)
    assert float(ours.compute()["score"]) == pytest.approx(np.mean(expected), abs=TOLERANCE)
    layers_only = ParameterRandomisation(protocol="reset", seeding="quantus", seed=42)  # Adebayo: layers only
    layers_only.update(reused_relu_net, inputs, target, maps, method=_method)
    assert float(layers_only.compute()["score"]) != pytest.approx(np.mean(expected), abs=1e-3)


def test_reset_protocol_resets_batchnorm_running_statistics(reused_relu_net, images) -> None:
    """The fully randomised copy has Quantus' BatchNorm state: running mean 0, running variance 1."""
    inputs, target = images[:2], torch.tensor([0, 1])
    metric = _ours(reused_relu_net, inputs, target, _method(reused_relu_net, inputs, target))
    randomised = metric._cascades[0].work
    for name in ("bn", "bn1", "bn2"):
        module = getattr(randomised, name)
        assert torch.equal(module.running_mean, torch.zeros(8)) and torch.equal(module.running_var, torch.ones(8))
        assert not torch.equal(getattr(reused_relu_net, name).running_mean, torch.zeros(8))  # the model keeps its


def test_ssim_pair_data_range_equals_quantus_ssim() -> None:
    """``data_range="pair"`` is Quantus' ``ssim`` (max − min of both maps); 2-D maps and 1-D rows. Tolerance 1e-6."""
    generator = torch.Generator().manual_seed(3)
    a = torch.randn(3, 1, 12, 15, generator=generator)
    b = 0.5 * a + torch.rand(3, 1, 12, 15, generator=generator)
    for window in (5, 7):
        expected = quantus_ssim(a[:, 0].numpy(), b[:, 0].numpy(), batched=True, win_size=window)
        np.testing.assert_allclose(ssim(a, b, window, "pair").numpy(), expected, rtol=0, atol=TOLERANCE)
        flat = quantus_ssim(a.flatten(1).numpy(), b.flatten(1).numpy(), batched=True, win_size=window)
        np.testing.assert_allclose(ssim(a.flatten(1)[:, None, None], b.flatten(1)[:, None, None], window, "pair"),
                                   flat, rtol=0, atol=TOLERANCE)
    fixed = quantus_ssim(a[:, 0].numpy(), b[:, 0].numpy(), batched=True, win_size=5)
    assert not np.allclose(ssim(a, b, 5, 2.0).numpy(), fixed, atol=1e-3)  # our default range 2 differs by design


def test_mprt_with_quantus_ssim_reproduced_by_pair_range_flat_layout(functional_relu_net, images) -> None:
    """Quantus' MPRT flattens the maps before its ``ssim`` (window 7, pair range): ``ssim_layout="flat"``. One image
    per call, because Quantus normalises by the maximum over the whole batch."""
    inputs, target = images[:1], torch.tensor([2])
    maps = _method(functional_relu_net, inputs, target)
    similarity = lambda a, b, batched, **kw: np.asarray(quantus_ssim(a, b, batched=batched, **kw))  # noqa: E731
    # (MPRT calls .tolist() on the result, which Quantus' ssim returns as a list)
    expected = _quantus(functional_relu_net, inputs, target, maps, abs=False, similarity_func=similarity)
    ours = _ours(functional_relu_net, inputs, target, maps, ssim_window=7, ssim_data_range="pair", ssim_layout="flat")
    np.testing.assert_allclose(ours.compute()["curve/ssim"].numpy(), [v[0] for v in expected.values()], rtol=0,
                               atol=TOLERANCE)
