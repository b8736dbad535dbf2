"""Every registered method on a vision transformer (timm ViT, random init): a finite map, or a clear error.

A ViT has GELU (not ReLU) nonlinearities and token tensors instead of spatial feature maps. Methods that need ReLU
neurons or a convolutional feature map must say so (``AttributionError`` naming the method), never return a map of
an attention tensor or crash with a raw error. Iteration/sample counts are reduced here: the test is about support,
not about the protocols' defaults.
"""

from __future__ import annotations

import pytest
import torch
from fast_methods import FAST_KWARGS

from lit_xai.attribution import AttributionError, available_methods, build_method

timm = pytest.importorskip("timm")

#: methods that work on any differentiable classifier (the rest must refuse a ViT with a clear error)
MODEL_AGNOSTIC = {
    "extremal_perturbation", "gradient", "gradient_shap", "guided_ig", "input_intgrad", "input_mct",
    "input_x_gradient", "integrated_gradients", "kernel_shap", "lime", "occlusion", "random", "rise", "smoothgrad",
    "smoothgrad_sq",
}


@pytest.fixture(scope="module")
def vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, num_classes=5
    ).eval()


@pytest.mark.parametrize("name", available_methods())
def test_every_method_serves_a_vit_or_says_why_not(vit: torch.nn.Module, name: str) -> None:
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    state = {k: v.clone() for k, v in vit.state_dict().items()}
    method = build_method(name, **FAST_KWARGS.get(name, {}))
    if name in MODEL_AGNOSTIC:
        maps = method(vit, x, torch.tensor([0, 1]))
        assert maps.shape[0] == 2 and maps.shape[-2:] == (32, 32)
        assert bool(torch.isfinite(maps).all())
    else:
        with pytest.raises(AttributionError, match=name):
            method(vit, x, torch.tensor([0, 1]))
    assert all(torch.equal(v, state[k]) for k, v in vit.state_dict().items())
