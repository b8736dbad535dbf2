"""DeepLIFT with the Rescale rule (Shrikumar et al. 2017) and DeepSHAP (Lundberg & Lee 2017).

DeepLIFT explains ``Δy = f(x) − f(x̄)`` against a reference ``x̄`` by back-propagating *multipliers*: through a
ReLU ``a = max(z, 0)`` the multiplier is ``m = Δa / Δz`` (Rescale rule, §3.5.2), ``Δz = z(x) − z(x̄)``,
and the plain gradient where ``|Δz| < eps``; through affine layers (conv, linear, eval-mode BatchNorm, mean
pooling) it is the weight, as for gradients. The map is ``(x − x̄) ⊙ m_{x→y}``, and summation-to-delta holds:
``Σ map = f(x) − f(x̄)`` on nets of affine layers and ReLUs. Max pooling keeps its gradient (the
``MaxPoolDeepLiftMode.gradient`` default of the authors' ``deeplift`` package), so there the sum is approximate.

The input and reference halves run as one ``[x; x̄]`` batch; every ReLU *call* (module, functional, in-place,
one module reused in a block) is replaced through a ``TorchFunctionMode`` by one whose backward is the Rescale
multiplier, so nothing is registered on the model.

DeepSHAP averages DeepLIFT maps over a background distribution of references (Lundberg & Lee 2017 §4.2; Captum's
``DeepLiftShap``, shap's ``DeepExplainer``): ``φ(x) = 1/N Σ_k DeepLIFT(x, x̄_k)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from lit_xai.attribution.activations import RELU_FUNCTIONS, check_activation, require_relus
from lit_xai.attribution.base import AttributionError, AttributionMethod, target_scores
from lit_xai.attribution.batching import check_max_batch, row_chunks, rows_per_chunk
from lit_xai.attribution.references import ReferenceSpec, check_reference_spec, reference_images
from lit_xai.attribution.registry import register

#: |Δz| below which the Rescale multiplier falls back to the gradient — Captum ``DeepLift(eps=1e-10)``.
DEFAULT_EPS = 1e-10


def rescale_relu(z: Tensor, eps: float) -> Tensor:
    """ReLU of a ``[x; x̄]`` batch whose backward for the input half is the Rescale multiplier ``Δa/Δz``.

    The value is exactly ``max(z, 0)``; the reference half carries no gradient.
    """
    zx, zr = z.chunk(2)
    with torch.no_grad():
        ax, ar = zx.clamp_min(0), zr.clamp_min(0)
        dz = zx - zr
        multiplier = torch.where(dz.abs() < eps, (zx > 0).to(z.dtype), (ax - ar) / dz)
    return torch.cat([ax + multiplier * (zx - zx.detach()), ar])


class RescaleMode(TorchFunctionMode):
    """Context manager: every ReLU call on a ``[x; x̄]`` batch becomes :func:`rescale_relu` (counted in ``calls``).

    In-place calls return a new tensor: the model must use the ReLU's return value (as torchvision/timm do).
    Other elementwise activations (GELU, SiLU, …) raise: their multipliers would silently be plain gradients.
    """

    def __init__(self, eps: float, method: str) -> None:
        super().__init__()
        self.eps = eps
        self.method = method
        self.calls = 0

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        check_activation(func, args, kwargs, self.method)
        if func not in RELU_FUNCTIONS:
            return func(*args, **kwargs)
        z = args[0] if args else kwargs["input"]
        if z.shape[0] % 2:
            raise AttributionError("deeplift: a ReLU saw an odd batch; the model must keep the [x; x̄] batch intact")
        self.calls += 1
        return rescale_relu(z, self.eps)


def mean_deeplift(
    model: nn.Module, inputs: Tensor, target: Tensor | None, refs: Tensor, paired: bool, eps: float,
    max_batch: int | None, method: str,
) -> Tensor:
    """``1/K Σ_k (x − x̄_k) ⊙ m(x, x̄_k)`` per image.

    ``paired``: ``refs[i]`` is image ``i``'s only reference (K = 1); otherwise every image meets every reference
    (K = N). Rows ``(image r // K, reference r % K)`` run ``max_batch`` pairs (2·max_batch rows) per pass; ``None``:
    half the rows of the memory budget (:mod:`lit_xai.attribution.batching`).
    """
    batch = inputs.shape[0]
    per_image = 1 if paired else refs.shape[0]
    total = torch.zeros_like(inputs)
    pairs = max_batch if max_batch is not None else max(1, rows_per_chunk(model, inputs) // 2)
    for start, end in row_chunks(batch * per_image, pairs):
        rows = torch.arange(start, end, device=inputs.device)
        images = rows // per_image
        x = inputs[images].requires_grad_(True)
        ref = refs[images] if paired else refs[rows % per_image]
        with RescaleMode(eps, method) as mode:
            logits = model(torch.cat([x, ref]))
        require_relus(mode.calls, method)
        scores, _ = target_scores(logits[: len(rows)], None if target is None else target[images])
        (multiplier,) = torch.autograd.grad(scores.sum(), x)
        total.index_add_(0, images, (x.detach() - ref) * multiplier)
    return total / per_image


def check_eps(eps: float, method: str) -> float:
    if not eps >= 0:
        raise AttributionError(f"{method}: eps must be ≥ 0, got {eps!r}")
    return float(eps)


@register("deeplift")
class DeepLift(AttributionMethod):
    """DeepLIFT-Rescale against ``baseline``: ``"zero"`` (Captum's default; the DeepLIFT paper's MNIST
    reference), a float, a tensor ``[C, H, W]``/``[1, C, H, W]`` or one reference per image ``[B, C, H, W]``,
    or a path to a saved tensor. ``Σ map = f(x) − f(x̄)`` on ReLU nets without max pooling."""

    def __init__(
        self, baseline: ReferenceSpec = "zero", eps: float = DEFAULT_EPS, max_batch: int | None = None
    ) -> None:
        check_reference_spec(baseline, "deeplift")
        self.baseline = baseline
        self.eps = check_eps(eps, "deeplift")
        self.max_batch = check_max_batch(max_batch)

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor | None) -> Tensor:
        refs = reference_images(self.baseline, inputs, self.name)
        if refs.shape[0] not in (1, inputs.shape[0]):
            raise AttributionError(f"deeplift: {refs.shape[0]} baselines for {inputs.shape[0]} inputs; give one "
                                   "baseline or one per input (use deepshap to average over a background)")
        refs = refs.expand_as(inputs)
        return mean_deeplift(model, inputs, target, refs, True, self.eps, self.max_batch, self.name)


@register("deepshap")
class DeepShap(AttributionMethod):
    """DeepSHAP: DeepLIFT-Rescale averaged over the ``background`` references ``[N, C, H, W]`` (a tensor or the
    path of a saved one; ``"zero"`` or a float give a single constant reference, i.e. DeepLIFT). ``B·N`` pairs
    run ``max_batch`` at a time. ``Σ map = f(x) − mean_k f(x̄_k)`` on ReLU nets without max pooling."""

    def __init__(
        self, background: ReferenceSpec = "zero", eps: float = DEFAULT_EPS, max_batch: int | None = None
    ) -> None:
        check_reference_spec(background, "deepshap")
        self.background = background
        self.eps = check_eps(eps, "deepshap")
        self.max_batch = check_max_batch(max_batch)

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor | None) -> Tensor:
        refs = reference_images(self.background, inputs, self.name)
        return mean_deeplift(model, inputs, target, refs, False, self.eps, self.max_batch, self.name)
