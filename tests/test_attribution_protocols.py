"""Baseline methods follow their named protocol: defaults pinned to their source, closed forms, clear refusals.

Peer equality (TorchRay, pytorch-grad-cam) lives in ``tests/conformance/test_conformance_attribution.py``.
"""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lit_xai.attribution import AttributionError, build_method
from lit_xai.attribution.cam import GradCAMPlusPlus
from lit_xai.attribution.extremal import BlurPerturbation, ExtremalPerturbation, SmoothMask
from lit_xai.attribution.layers import swin_reshape_transform, vit_reshape_transform

torch.set_num_threads(1)


def defaults(cls: type) -> dict:
    return {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}


# ---------------------------------------------------------------- Extremal Perturbation


def test_extremal_perturbation_defaults_are_torchrays():
    """TorchRay 1.0.0.2 ``extremal_perturbation`` / ``Perturbation`` / ``MaskGenerator`` defaults."""
    assert defaults(ExtremalPerturbation) == {
        "areas": (0.1,), "iterations": 800, "lr": 0.01, "momentum": 0.9, "dampening": 0.9, "area_penalty": 300.0,
        "penalty_growth": 1.0035, "variant": "preserve", "levels": 8, "max_blur": 20.0, "step": 7, "sigma": 21.0,
        "coldness": 20.0, "init": 1.0, "jitter": True,
    }


def test_mask_canvas_has_torchrays_geometry():
    """At 224², step 7, σ 21: a 32² parameter grid and a 260² canvas (TorchRay's ``shape_in``/``shape_out``) whose
    centre, offset by the 21-px margin, is the image; the area constraint counts all 260² pixels."""
    mask = SmoothMask(224, 224, step=7, sigma=21.0, coldness=20.0, device=torch.device("cpu"))
    assert mask.grid_shape == (32, 32) and mask.canvas_shape == (260, 260) and mask.offset == 21
    params = torch.zeros(1, 1, 32, 32)
    params[0, 0, 3, 5] = 1.0  # grid point (3, 5) sits at image pixel (21, 35)
    image = mask(params)[0, 0]
    assert image.shape == (224, 224)
    # TorchRay's bump exp(−2·max(d/σ − ½, 0)²): flat (= 1) within σ/2 of the grid point, exp(−½) at d = σ
    for row, col in [(21, 35), (21, 35 + 10), (21 + 10, 35)]:
        assert abs(image[row, col].item() - 1.0) < 1e-4  # softmax pooling with the zero neighbours: 1 − O(e^−20)
    assert abs(image[21, 35 + 21].item() - torch.exp(torch.tensor(-0.5)).item()) < 0.01
    assert image[21, 35 + 63] < 1e-3


def test_mask_canvas_covers_the_image_where_torchrays_would_not():
    """step 4, σ 6 on 20 px: TorchRay's canvas (25 px) ends before the image does (6 + 20); one more grid cell."""
    mask = SmoothMask(20, 20, step=4, sigma=6.0, coldness=20.0, device=torch.device("cpu"))
    assert mask.canvas_shape == (29, 29)
    assert mask(torch.ones(1, 1, *mask.grid_shape)).shape == (1, 1, 20, 20)


def test_blur_perturbation_is_torchrays_zero_padded_pyramid():
    """σ_l = 20·(1 − l/7), kernel radius ⌈4σ⌉, zero padding: a constant image darkens towards the border; at m = 1
    both interpolated levels are the input, so the mask gets no gradient there."""
    x = torch.ones(1, 1, 40, 40)
    pyramid = BlurPerturbation(x, levels=8, max_blur=20.0)
    most_blurred = pyramid.pyramid[0, 0, 0]
    assert most_blurred[20, 20] < 0.8 and most_blurred[0, 0] < 0.3  # zero padding pulls the constant down
    torch.testing.assert_close(pyramid.pyramid[0, -1], x[0])
    mask = torch.ones(1, 1, 40, 40, requires_grad=True)
    pyramid.apply(mask).sum().backward()
    assert mask.grad.abs().max() == 0


class TextureEnergyNet(nn.Module):
    """Logit 0 = 10 · mean squared Laplacian response: fine texture anywhere in the image, flip-invariant (TorchRay's
    jitter flips the image on every other iteration). Blurring a textured region removes its energy."""

    def __init__(self) -> None:
        super().__init__()
        self.laplacian = nn.Conv2d(3, 1, 3, padding=1, bias=False)
        kernel = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]])
        self.laplacian.weight.data.copy_(kernel.expand(1, 3, 3, 3) / 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        energy = 10 * self.laplacian(x).square().mean(dim=(1, 2, 3))
        return torch.stack([energy, torch.zeros_like(energy)], dim=1)


@pytest.mark.slow
def test_extremal_perturbation_finds_the_planted_region_with_default_arguments():
    """Texture planted in a 24×24 box of a flat 64² image; every argument default (800 iterations). Measured: mask
    mean 0.78 / 0.78 inside the box vs 0.22 / 0.18 outside, peaks inside; the pre-TorchRay defaults (mask started at
    0.5, …) gave 0.016 / 0.002 inside vs 0.12 outside, peaks at (0, 32)."""
    x = torch.zeros(2, 3, 64, 64)
    boxes = [(8, 8), (30, 36)]
    generator = torch.Generator().manual_seed(0)
    for b, (row, col) in enumerate(boxes):
        x[b, :, row:row + 24, col:col + 24] = torch.randn(3, 24, 24, generator=generator)
    masks = build_method("extremal_perturbation")(TextureEnergyNet(), x, 0)
    for b, (row, col) in enumerate(boxes):
        inside = masks[b, 0, row:row + 24, col:col + 24]
        outside = (masks[b].sum() - inside.sum()) / (64 * 64 - 24 * 24)
        assert inside.mean() > 0.6 and outside < 0.3
        peak_row, peak_col = divmod(int(masks[b, 0].argmax()), 64)
        assert row <= peak_row < row + 24 and col <= peak_col < col + 24


# ---------------------------------------------------------------- GradCAM++


def test_gradcam_pp_default_is_the_papers_formula_and_eps_reproduces_pytorch_grad_cam():
    """Eq. 19 with the exponential score, computed here in float64 from A and g: the default (eps = 0) equals it; with
    small gradients pytorch-grad-cam's eps = 1e-6 changes the weights visibly (the pinned, documented switch)."""
    activation = torch.rand(2, 4, 3, 3, generator=torch.Generator().manual_seed(0)).double()
    grad = 1e-3 * torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(1)).double()
    grad[0, 0, 0, 0] = 0.0
    a_sum = activation.sum(dim=(2, 3), keepdim=True)
    expected = torch.zeros(2, 4, 1, 1, dtype=torch.float64)
    for b in range(2):
        for k in range(4):
            for i in range(3):
                for j in range(3):
                    g = grad[b, k, i, j]
                    if g != 0:
                        alpha = g**2 / (2 * g**2 + a_sum[b, k, 0, 0] * g**3)
                        expected[b, k, 0, 0] += alpha * max(g, 0)
    paper = GradCAMPlusPlus().channel_weights(activation, grad)
    torch.testing.assert_close(paper, expected, rtol=1e-12, atol=0)
    grad_cam_lib = GradCAMPlusPlus(eps=1e-6).channel_weights(activation, grad)
    assert ((grad_cam_lib - paper).abs().max() / paper.abs().max()) > 0.1
    with pytest.raises(AttributionError, match="eps must be"):
        GradCAMPlusPlus(eps=-1.0)


# ---------------------------------------------------------------- ReLU-based methods refuse other activations


class MixedNet(nn.Module):
    """ReLU, GELU and a ReLU written as ``clamp(min=0)``: only one of the three is an ``F.relu`` call."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv3 = nn.Conv2d(4, 4, 3, padding=1)
        self.act = nn.GELU()
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = self.act(self.conv2(x))
        x = self.conv3(x).clamp(min=0)
        return self.head(x.mean(dim=(2, 3)))


class ClampNet(MixedNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = torch.clamp_min(self.conv3(F.relu(self.conv2(x))), 0.0)
        return self.head(x.mean(dim=(2, 3)))


class SiLUNet(MixedNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.silu(self.conv2(x))
        return self.head(x.mean(dim=(2, 3)))


class SqueezeExcitationNet(MixedNet):
    """ReLU neurons with a sigmoid gate (squeeze-excitation): the gate is not a neuron, the net is supported."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = x * torch.sigmoid(x.mean(dim=(2, 3), keepdim=True))
        return self.head(F.relu(self.conv2(x)).mean(dim=(2, 3)))


RELU_METHODS = ["guided_backprop", "rectgrad", "prune_grad", "neuron_mct", "dga"]


@pytest.mark.parametrize("method", RELU_METHODS)
@pytest.mark.parametrize("net,called", [(MixedNet, "nn.GELU / F.gelu"), (ClampNet, "torch.clamp_min(min=0)"),
                                        (SiLUNet, "nn.SiLU / F.silu")])
def test_relu_methods_refuse_other_activations(method, net, called):
    """Before: each method ran and acted on the F.relu call only (1 of 3 nonlinearities of MixedNet)."""
    torch.manual_seed(0)
    model = net().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(AttributionError, match=rf"^{method} needs a network with ReLU activations only") as error:
        build_method(method)(model, torch.randn(2, 3, 8, 8), 0)
    assert called in str(error.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("method", RELU_METHODS)
def test_relu_methods_accept_sigmoid_gates(method):
    torch.manual_seed(0)
    maps = build_method(method)(SqueezeExcitationNet().eval(), torch.randn(2, 3, 8, 8), 0)
    assert maps.shape[0] == 2 and bool(torch.isfinite(maps).all())


# ---------------------------------------------------------------- token models (timm ViT)


@pytest.fixture(scope="module")
def vit() -> nn.Module:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                             num_classes=5).eval()


VIT_INPUT = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))


def test_gradcam_on_a_vit_with_the_reshape_transform(vit):
    maps = build_method("gradcam", layer="blocks.11.norm1", reshape_transform="vit", upsample=True)(vit, VIT_INPUT, 1)
    assert maps.shape == (2, 1, 32, 32) and bool(torch.isfinite(maps).all()) and maps.abs().max() > 0


def test_gradcam_automatic_layer_refuses_a_vit(vit):
    """Before: the automatic choice returned a map at ``blocks.11.attn.k_norm`` ([B, heads, tokens, dim])."""
    for method in ("gradcam", "gradcam_pp"):
        with pytest.raises(AttributionError, match=rf"{method}: the automatic layer choice found "
                                                   r"'blocks\.11\.attn\.k_norm' .* not a convolutional feature map"):
            build_method(method)(vit, VIT_INPUT, 1)


def test_gradcam_token_layer_without_transform_and_bad_transforms_are_clear(vit):
    with pytest.raises(AttributionError, match=r"'blocks\.11\.norm1' outputs shape \[2, 17, 192\].*reshape_transform"):
        build_method("gradcam", layer="blocks.11.norm1")(vit, VIT_INPUT, 1)
    with pytest.raises(AttributionError, match="reshape_transform needs an explicit layer"):
        build_method("gradcam", reshape_transform="vit")(vit, VIT_INPUT, 1)
    with pytest.raises(AttributionError, match="unknown reshape_transform 'cnn'"):
        build_method("gradcam", reshape_transform="cnn")


def test_fullgrad_refuses_a_vit_with_the_layer_named(vit):
    """Before: a raw size-mismatch RuntimeError from broadcasting a token layer's bias."""
    with pytest.raises(AttributionError, match=r"layer 'blocks\.0\.attn\.qkv' \(Linear\) outputs shape \[2, 17, 576\]"):
        build_method("fullgrad")(vit, VIT_INPUT, 1)


def test_relu_methods_refuse_a_vit(vit):
    with pytest.raises(AttributionError, match="guided_backprop needs a network with ReLU activations only.*GELU"):
        build_method("guided_backprop")(vit, VIT_INPUT, 1)


def test_reshape_transforms_follow_pytorch_grad_cam():
    """Same layout as pytorch-grad-cam's ``vit_reshape_transform`` / ``swinT_reshape_transform``; the grid size is
    inferred when square; timm's channels-last Swin stages are permuted."""
    pgc = pytest.importorskip("pytorch_grad_cam.utils.reshape_transforms")
    tokens = torch.randn(2, 1 + 12, 5)
    torch.testing.assert_close(vit_reshape_transform(tokens, height=3, width=4),
                               pgc.vit_reshape_transform(tokens, height=3, width=4), rtol=0, atol=0)
    square = torch.randn(2, 1 + 16, 5)
    torch.testing.assert_close(vit_reshape_transform(square), pgc.vit_reshape_transform(square, 4, 4), rtol=0, atol=0)
    swin = torch.randn(2, 9, 5)
    torch.testing.assert_close(swin_reshape_transform(swin), pgc.swinT_reshape_transform(swin, 3, 3), rtol=0, atol=0)
    channels_last = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(swin_reshape_transform(channels_last), channels_last.permute(0, 3, 1, 2))
    with pytest.raises(AttributionError, match="not a square grid"):
        vit_reshape_transform(torch.randn(2, 1 + 12, 5))
