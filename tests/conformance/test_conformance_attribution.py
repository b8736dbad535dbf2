"""Baseline attribution methods against their reference implementations, on nets lit_xai does not ship.

Peers: TorchRay 1.0.0.2 (``extremal_perturbation``, the authors' code of Fong et al. 2019) and pytorch-grad-cam
1.5 (``GradCAM``, ``GradCAMPlusPlus`` with ``vit_reshape_transform``). Each case states its tolerance.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from lit_xai.attribution import build_method

#: float32 rounding of the same computation in different batch compositions / libraries
FLOAT_TOL = {"rtol": 1e-5, "atol": 1e-5}

#: the spatial layer each foreign net is explained at (the reused net's ReLU module runs three times)
CAM_LAYERS = {"ReusedInplaceReLUNet": "bn2", "FunctionalReLUNet": "conv2"}


# ---------------------------------------------------------------- Extremal Perturbation vs TorchRay


@pytest.mark.parametrize("areas", [[0.1], [0.05, 0.2]])
def test_extremal_perturbation_defaults_equal_torchray(foreign_net: nn.Module, areas: list[float]) -> None:
    """Every default is TorchRay's (mask init 1, jitter, SGD dampening, canvas area, step 7, σ 21, max_blur 20, zero
    padding): the masks of the first 10 iterations agree per image (TorchRay runs one image at a time; lit_xai sums
    the areas). Tolerance 1e-5 absolute on masks in [0, 1] (float32 rounding; a near-tie in the area sort could flip
    an order and would show here as a large difference)."""
    torchray_ep = pytest.importorskip("torchray.attribution.extremal_perturbation")
    x = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(4))
    target = [1, 3]
    ours = build_method("extremal_perturbation", areas=areas, iterations=10)(foreign_net, x, torch.tensor(target))
    requires_grad = [p.requires_grad for p in foreign_net.parameters()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchRay's torch.meshgrid without indexing=
        for b in range(2):
            theirs, _ = torchray_ep.extremal_perturbation(foreign_net, x[b:b + 1], target[b], areas=areas, max_iter=10)
            torch.testing.assert_close(ours[b], theirs.sum(0), **FLOAT_TOL)
    for p, flag in zip(foreign_net.parameters(), requires_grad):  # TorchRay switches them off and leaves them so
        p.requires_grad_(flag)


def test_extremal_perturbation_delete_variant_equals_torchray(reused_relu_net: nn.Module) -> None:
    """The deletion game (mask 1 − m perturbs the image): same tolerance as above."""
    torchray_ep = pytest.importorskip("torchray.attribution.extremal_perturbation")
    x = torch.randn(1, 3, 24, 24, generator=torch.Generator().manual_seed(5))
    ours = build_method("extremal_perturbation", variant="delete", iterations=8)(reused_relu_net, x, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs, _ = torchray_ep.extremal_perturbation(reused_relu_net, x, 2, variant="delete", max_iter=8)
    torch.testing.assert_close(ours, theirs, **FLOAT_TOL)


# ---------------------------------------------------------------- GradCAM / GradCAM++ vs pytorch-grad-cam


def _grad_cam_raw(cam_class, model: nn.Module, layer: nn.Module, x: torch.Tensor, target: list[int], monkeypatch,
                  **kwargs) -> torch.Tensor:
    """pytorch-grad-cam's ReLU'd map before its min-max scaling and resize (``scale_cam_image`` made the identity)."""
    from pytorch_grad_cam import base_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    monkeypatch.setattr(base_cam, "scale_cam_image", lambda cam, target_size=None: np.float32(cam))
    with cam_class(model=model, target_layers=[layer], **kwargs) as cam:
        out = cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in target])
    return torch.from_numpy(out)[:, None]


@pytest.mark.parametrize("method", ["gradcam", "gradcam_pp"])
def test_gradcam_equals_pytorch_grad_cam(foreign_net: nn.Module, images: torch.Tensor, method: str,
                                         monkeypatch) -> None:
    """GradCAM, and GradCAM++ with ``eps=1e-6`` (pytorch-grad-cam's constant), equal pytorch-grad-cam's raw maps
    (tolerance 1e-5 relative to the largest value). The default ``eps=0`` is the paper's Eq. 19, pinned in
    ``tests/test_attribution_protocols.py``."""
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus

    layer = CAM_LAYERS[type(foreign_net).__name__]
    target = foreign_net(images).argmax(1).tolist()
    kwargs = {"eps": 1e-6} if method == "gradcam_pp" else {}
    ours = build_method(method, layer=layer, **kwargs)(foreign_net, images, torch.tensor(target))
    peer = GradCAMPlusPlus if method == "gradcam_pp" else GradCAM
    theirs = _grad_cam_raw(peer, foreign_net, foreign_net.get_submodule(layer), images, target, monkeypatch)
    scale = theirs.abs().max().item()
    assert scale > 0
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5 * scale)


def test_gradcam_pipeline_reproduces_pytorch_grad_cam_output(foreign_net: nn.Module, images: torch.Tensor) -> None:
    """pytorch-grad-cam's published output: the ReLU'd map resized with cv2's bilinear (half-pixel centres =
    ``upsample(..., align_corners=False)``), then per image ``(m − min)/(max − min + 1e-7)`` (it scales before and
    again after the resize; min-max being affine, once after is the same up to the 1e-7). Tolerance 5e-4 absolute on
    maps in [0, 1] (float32 rounding through two rescalings; measured 1.9e-4)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer = CAM_LAYERS[type(foreign_net).__name__]
    target = foreign_net(images).argmax(1).tolist()
    with GradCAM(model=foreign_net, target_layers=[foreign_net.get_submodule(layer)]) as cam:
        theirs = torch.from_numpy(cam(input_tensor=images, targets=[ClassifierOutputTarget(t) for t in target]))
    ours = build_method("gradcam", layer=layer, upsample=True)(foreign_net, images, torch.tensor(target))
    low = ours.amin(dim=(1, 2, 3), keepdim=True)
    ours = (ours - low) / (ours.amax(dim=(1, 2, 3), keepdim=True) - low + 1e-7)
    torch.testing.assert_close(ours[:, 0], theirs, rtol=0, atol=5e-4)


@pytest.mark.parametrize("method", ["gradcam", "gradcam_pp"])
def test_gradcam_on_a_vit_equals_pytorch_grad_cam_with_its_reshape_transform(method: str, monkeypatch) -> None:
    """A timm ViT (random init, 32², 8-px patches → 4×4 tokens + class token) at ``blocks.11.norm1``, the layer of
    pytorch-grad-cam's ViT tutorial: ``reshape_transform="vit"`` equals its ``vit_reshape_transform(height=4,
    width=4)`` (tolerance 1e-5 relative to the largest value)."""
    timm = pytest.importorskip("timm")
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
    from pytorch_grad_cam.utils.reshape_transforms import vit_reshape_transform

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, num_classes=5)
    model.eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    target = [1, 4]
    kwargs = {"eps": 1e-6} if method == "gradcam_pp" else {}
    method_fn = build_method(method, layer="blocks.11.norm1", reshape_transform="vit", **kwargs)
    ours = method_fn(model, x, torch.tensor(target))
    peer = GradCAMPlusPlus if method == "gradcam_pp" else GradCAM
    theirs = _grad_cam_raw(peer, model, model.blocks[-1].norm1, x, target, monkeypatch,
                           reshape_transform=lambda t: vit_reshape_transform(t, height=4, width=4))
    assert ours.shape == (2, 1, 4, 4)
    scale = theirs.abs().max().item()
    assert scale > 0
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5 * scale)
