"""DeepLIFT with the Rescale or the RevealCancel rule (Shrikumar et al. 2017) and DeepSHAP (Lundberg & Lee 2017).

DeepLIFT explains ``Δy = f(x) − f(x̄)`` against a reference ``x̄`` by back-propagating *multipliers*: through a
ReLU ``a = max(z, 0)`` the multiplier is ``m = Δa / Δz`` (Rescale rule, §3.5.2), ``Δz = z(x) − z(x̄)``,
and the plain gradient where ``|Δz| < eps``; through affine layers (conv, linear, eval-mode BatchNorm, mean
pooling) it is the weight, as for gradients. The map is ``(x − x̄) ⊙ m_{x→y}``, and summation-to-delta holds:
``Σ map = f(x) − f(x̄)`` on nets of affine layers and ReLUs. Max pooling keeps its gradient (the
``MaxPoolDeepLiftMode.gradient`` default of the authors' ``deeplift`` package), so there the sum is approximate.

The input and reference halves run as one ``[x; x̄]`` batch; every ReLU *call* (module, functional, in-place,
one module reused in a block) is replaced through a ``TorchFunctionMode`` by one whose backward is the Rescale
multiplier, so nothing is registered on the model.

RevealCancel (§3.5.3) treats the positive and negative contributions reaching a ReLU input ``z`` separately. The
linear rule (§3.5.1) splits a conv/linear output by the sign of each term ``w_i Δa_i`` of its input's *total*
difference, ``Δz⁺ = Σ_i [w_i Δa_i]₊``, ``Δz⁻ = Σ_i [w_i Δa_i]₋``; other affine steps carry the two parts along (a
BatchNorm scale of negative sign swaps them, as in the authors' ``BatchNormalization`` layer); then, with
``f = ReLU`` and ``z̄`` the reference input of the ReLU,
``Δy⁺ = ½(f(z̄+Δz⁺) − f(z̄)) + ½(f(z̄+Δz⁻+Δz⁺) − f(z̄+Δz⁻))``,
``Δy⁻ = ½(f(z̄+Δz⁻) − f(z̄)) + ½(f(z̄+Δz⁺+Δz⁻) − f(z̄+Δz⁺))``, and the multipliers ``m⁺ = Δy⁺/Δz⁺``,
``m⁻ = Δy⁻/Δz⁻`` flow back to the terms of each sign. Rows ``[x; x̄; x̄+Δ⁺; x̄+Δ⁻]`` carry the values at ``x`` and
at the reference and the two parts as offsets from the reference, so biases and every positive-coefficient linear
step (sums, means, average pooling, reshapes, padding) need no rule; subtraction, negation and negative factors swap
the parts of what they negate. ``Σ map = f(x) − f(x̄)`` as for Rescale. Not split per term: linear maps with
mixed-sign coefficients written otherwise (in-place ``sub_``/``mul_``; matmul, einsum and transposed convolutions
are refused with gates and per-sample normalisers): their parts are re-split by sign at the next ReLU.

DeepSHAP averages DeepLIFT maps over a background distribution of references (Lundberg & Lee 2017 §4.2; Captum's
``DeepLiftShap``, shap's ``DeepExplainer``): ``φ(x) = 1/N Σ_k DeepLIFT(x, x̄_k)``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from lit_xai.attribution.activations import RELU_FUNCTIONS, check_activation, require_relus
from lit_xai.attribution.base import AttributionError, AttributionMethod, target_scores
from lit_xai.attribution.batching import check_max_batch, rows_per_chunk
from lit_xai.attribution.references import ReferenceSpec, check_reference_spec, reference_images
from lit_xai.attribution.registry import register

#: |Δz| below which the Rescale multiplier falls back to the gradient — Captum ``DeepLift(eps=1e-10)``; for
#: RevealCancel, |Δz⁺| (|Δz⁻|) below which the multiplier is its limit (see :func:`reveal_cancel_relu`).
DEFAULT_EPS = 1e-10
#: the rules: ``rescale`` (§3.5.2; Captum ``DeepLift``, shap ``DeepExplainer``) and ``reveal_cancel`` (§3.5.3).
RULES = ("rescale", "reveal_cancel")
#: conv/linear layers, where the linear rule (§3.5.1) splits ``w·Δa`` by the sign of each term
WEIGHTED_FUNCTIONS = frozenset({F.conv1d, F.conv2d, F.conv3d, F.linear})
#: max pooling: the gradient rule (authors' ``MaxPoolDeepLiftMode.gradient``), its output split afresh by sign
MAX_POOL_FUNCTIONS = frozenset({
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
})
#: sign-flipping elementwise steps: a negative factor swaps the parts of the operand it multiplies
NEGATIONS = frozenset({torch.neg, Tensor.neg})
SUBTRACTIONS = frozenset({torch.sub, Tensor.sub})  # a − alpha·b
REVERSED_SUBTRACTIONS = frozenset({torch.rsub, Tensor.__rsub__})  # b − alpha·a
SCALINGS = frozenset({torch.mul, Tensor.mul, torch.div, Tensor.div})
SIGN_STEPS = NEGATIONS | SUBTRACTIONS | REVERSED_SUBTRACTIONS | SCALINGS
#: calls RevealCancel has no rule for: gates and per-sample normalisers (the Rescale pass lets gates through as
#: gradients) and products that could hide a mixed-sign linear map from the sign split
REVEAL_CANCEL_UNSUPPORTED: dict[Any, str] = {
    F.layer_norm: "nn.LayerNorm", F.group_norm: "nn.GroupNorm", F.instance_norm: "nn.InstanceNorm",
    F.local_response_norm: "nn.LocalResponseNorm", F.normalize: "F.normalize",
    torch.sigmoid: "torch.sigmoid", Tensor.sigmoid: "Tensor.sigmoid", F.sigmoid: "F.sigmoid",
    torch.tanh: "torch.tanh", Tensor.tanh: "Tensor.tanh", F.tanh: "F.tanh", F.hardsigmoid: "nn.Hardsigmoid",
    F.softmax: "softmax", torch.softmax: "softmax", Tensor.softmax: "softmax", F.log_softmax: "log_softmax",
    torch.matmul: "torch.matmul", Tensor.matmul: "Tensor.matmul", Tensor.__matmul__: "the @ operator",
    torch.mm: "torch.mm", torch.bmm: "torch.bmm", torch.einsum: "torch.einsum", F.conv_transpose2d: "conv_transpose2d",
    F.scaled_dot_product_attention: "scaled_dot_product_attention",
}


class RescaleReLU(torch.autograd.Function):
    """ReLU of a ``[x; x̄]`` batch whose backward for the input half is the Rescale multiplier ``Δa/Δz`` (§3.5.2).

    The value is exactly ``max(z, 0)``; the reference half carries no gradient. Where ``|Δz| < eps`` the multiplier
    is the gradient ``1[z > 0]`` at ``x`` (Captum's rule). One node: the multiplier is formed in the forward and
    applied by one product in the backward.
    """

    @staticmethod
    def forward(ctx: Any, z: Tensor, eps: float) -> Tensor:
        a = z.clamp_min(0)
        (zx, zr), (ax, ar) = z.chunk(2), a.chunk(2)
        dz = zx - zr
        multiplier = (ax - ar).div_(dz)
        multiplier = torch.where(dz.abs_() < eps, (zx > 0).to(z.dtype), multiplier)
        ctx.save_for_backward(multiplier)
        return a

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (multiplier,) = ctx.saved_tensors
        out = torch.zeros_like(grad)
        torch.mul(grad[: multiplier.shape[0]], multiplier, out=out[: multiplier.shape[0]])
        return out, None


class RescaleMode(TorchFunctionMode):
    """Context manager: every ReLU call on a ``[x; x̄]`` batch becomes :class:`RescaleReLU` (counted in ``calls``).

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
        return RescaleReLU.apply(z, self.eps)


def sign_split(delta: Tensor) -> tuple[Tensor, Tensor]:
    """``(Δ⁺, Δ⁻)`` with ``Δ⁺ + Δ⁻ = Δ``; where ``Δ = 0`` both parts get half the gradient, as the authors' ``Dense``
    layer gives zero-difference inputs ``½(m⁺ + m⁻)``."""
    with torch.no_grad():
        share = (delta > 0).to(delta.dtype) + 0.5 * (delta == 0).to(delta.dtype)
    return delta * share, delta * (1 - share)


def part_gradients(grad: Tensor) -> Tensor:
    """The gradient ``[0; 0; g; g]`` of the rows ``[x; x̄; x̄+Δ⁺; x̄+Δ⁻]`` for a value differentiated as ``Δ⁺ + Δ⁻``
    (``x`` and ``x̄`` carry no gradient)."""
    rows = grad.new_empty((4 * grad.shape[0], *grad.shape[1:]))
    at_x, at_ref, up, down = rows.chunk(4)
    at_x.zero_()
    at_ref.zero_()
    up.copy_(grad)
    down.copy_(grad)
    return rows


class Difference(torch.autograd.Function):
    """From the rows ``[x; x̄; x̄+Δ⁺; x̄+Δ⁻]``: the value ``Δ = x − x̄`` (``relative=True``) or ``x`` itself, with the
    gradient of ``Δ⁺ + Δ⁻`` (only the parts carry the backward)."""

    @staticmethod
    def forward(ctx: Any, rows: Tensor, relative: bool) -> Tensor:
        at_x, at_ref, _, _ = rows.chunk(4)
        return at_x - at_ref if relative else at_x.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return part_gradients(grad), None


class LinearRows(torch.autograd.Function):
    """The rows ``[z̄ + W·Δa; z̄; z̄ + ½(W·Δa + |W|·|Δa|); z̄ + ½(W·Δa − |W|·|Δa|)]`` of the linear rule from
    ``z̄ = out_ref``, ``lin = W·Δa`` and ``mag = |W|·|Δa|``; only the parts carry gradients, as in
    :meth:`RevealCancelMode.rows`."""

    @staticmethod
    def forward(ctx: Any, out_ref: Tensor, lin: Tensor, mag: Tensor) -> Tensor:
        rows = out_ref.new_empty((4 * out_ref.shape[0], *out_ref.shape[1:]))
        at_x, at_ref, up, down = rows.chunk(4)
        torch.add(out_ref, lin, out=at_x)
        at_ref.copy_(out_ref)
        torch.add(lin, mag, out=up).mul_(0.5).add_(out_ref)
        torch.sub(lin, mag, out=down).mul_(0.5).add_(out_ref)
        return rows

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor, Tensor]:
        _, at_ref, up, down = grad.chunk(4)
        to_ref = at_ref + up + down if ctx.needs_input_grad[0] else None
        return to_ref, torch.add(up, down).mul_(0.5), torch.sub(up, down).mul_(0.5)


class RevealCancelReLU(torch.autograd.Function):
    """ReLU of the rows ``[z; z̄; z̄+Δz⁺; z̄+Δz⁻]`` with ``Δz⁺ ≥ 0 ≥ Δz⁻``: the rows ``[f(z); f(z̄); f(z̄)+Δy⁺;
    f(z̄)+Δy⁻]``, whose backward sends ``m± = Δy±/Δz±`` (constants) to the parts and nothing to ``z``, ``z̄``.

    ``Δy⁺ = ½(f(z̄+Δz⁺) − f(z̄)) + ½(f(z) − f(z̄+Δz⁻))``, ``Δy⁻ = f(z) − f(z̄) − Δy⁺`` (§3.5.3; ``z`` stands for
    ``z̄ + Δz⁺ + Δz⁻``, so ``Δy⁺ + Δy⁻ = f(z) − f(z̄)``). Where ``Δz⁺ ≤ eps`` the multiplier is its limit
    ``½(f'(z̄) + f'(z̄+Δz⁻))`` (right derivatives), where ``Δz⁻ ≥ −eps`` ``½(f'(z̄) + f'(z̄+Δz⁺))`` (left
    derivatives): the authors' code approximates these limits with the pseudocount ``Δz ± 1e-7``. Where a part has
    the wrong sign beyond ``eps`` (an unhandled sign flip upstream), the parts are re-split by sign first.
    """

    @staticmethod
    def forward(ctx: Any, z: Tensor, eps: float) -> Tensor:
        at_x, ref, up, down = z.chunk(4)
        pos, neg = up - ref, down - ref
        keep: tuple[Tensor, ...] = ()
        if not (bool(pos.min() >= -eps) and bool(neg.max() <= eps)):
            keep_pos, keep_neg = pos >= -eps, neg <= eps
            pos, neg = (torch.where(keep_pos, pos, 0) + torch.where(keep_neg, 0, neg),
                        torch.where(keep_neg, neg, 0) + torch.where(keep_pos, 0, pos))
            up, down, keep = ref + pos, ref + neg, (keep_pos, keep_neg)
        rows = torch.empty_like(z)
        f_x, f_ref, y_up, y_down = rows.chunk(4)
        torch.clamp_min(at_x, 0, out=f_x)
        torch.clamp_min(ref, 0, out=f_ref)
        f_up, f_down = up.clamp_min(0), down.clamp_min(0)
        dy_pos = f_up.sub_(f_ref).add_(torch.sub(f_x, f_down, out=f_down)).mul_(0.5)
        dy_neg = torch.sub(f_x, f_ref).sub_(dy_pos)
        torch.add(f_ref, dy_pos, out=y_up)
        torch.add(f_ref, dy_neg, out=y_down)
        dtype = z.dtype
        limit_pos = (ref >= 0).to(dtype).add_(down >= 0).mul_(0.5)
        limit_neg = (ref > 0).to(dtype).add_(up > 0).mul_(0.5)
        m_pos = torch.where(pos > eps, dy_pos.div_(pos), limit_pos)
        m_neg = torch.where(neg < -eps, dy_neg.div_(neg), limit_neg)
        ctx.save_for_backward(m_pos, m_neg, *keep)
        return rows

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        m_pos, m_neg, *keep = ctx.saved_tensors
        _, _, g_up, g_down = grad.chunk(4)
        rows = torch.empty_like(grad)
        at_x, at_ref, to_pos, to_neg = rows.chunk(4)
        at_x.zero_()
        at_ref.zero_()
        if keep:  # the re-split: Δz⁺ kept where keep_pos, else it went to Δz⁻ (and vice versa)
            keep_pos, keep_neg = keep
            by_pos, by_neg = g_up * m_pos, g_down * m_neg
            torch.where(keep_pos, by_pos, by_neg, out=to_pos)
            torch.where(keep_neg, by_neg, by_pos, out=to_neg)
        else:
            torch.mul(g_up, m_pos, out=to_pos)
            torch.mul(g_down, m_neg, out=to_neg)
        return rows, None


class RevealCancelMode(TorchFunctionMode):
    """Context manager for a forward of the rows ``[x; x̄; x̄+Δx⁺; x̄+Δx⁻]`` (``pairs`` rows each): every tensor of
    that batch holds its value at ``x``, at the reference and, as offsets from the reference, the positive and
    negative contributions ``Δ⁺, Δ⁻`` (whose sum is ``Δ`` up to round-off).

    Conv/linear calls apply the linear rule to ``Δa = a(x) − a(x̄)`` (the rows' values, not the sum of the parts),
    BatchNorm swaps the parts where its scale is negative, subtraction, negation and negative factors swap the parts of
    what they negate, max pooling takes the gradient rule at ``x`` and splits its output difference afresh by sign,
    ReLU calls apply :class:`RevealCancelReLU` (counted in ``calls``); everything else runs on the whole batch,
    which is exact for linear steps with non-negative coefficients. Where a part reaches a ReLU with the wrong sign
    (an unhandled sign flip, e.g. in-place ``mul_(-1)``) the parts are re-split by sign there. The backward reaches
    the input only through the parts, each with its multiplier.
    """

    def __init__(self, pairs: int, eps: float, method: str) -> None:
        super().__init__()
        self.pairs = pairs
        self.eps = eps
        self.method = method
        self.calls = 0
        self.abs_weights: dict[int, tuple[Tensor, Tensor]] = {}

    def tracked(self, t: Any) -> bool:
        return isinstance(t, Tensor) and t.dim() > 0 and t.shape[0] == 4 * self.pairs

    @staticmethod
    def rows(x: Tensor, ref: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
        return torch.cat([x.detach(), ref, ref + pos, ref + neg])

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        check_activation(func, args, kwargs, self.method)
        if func in REVEAL_CANCEL_UNSUPPORTED:
            raise AttributionError(
                f"{self.method}: rule='reveal_cancel' has rules for conv/linear layers, BatchNorm, ReLU, max pooling "
                f"and positive-coefficient linear steps only, but the model calls {REVEAL_CANCEL_UNSUPPORTED[func]}; "
                "use rule='rescale'")
        first = args[0] if args else kwargs.get("input")
        if func in RELU_FUNCTIONS:
            if not self.tracked(first):
                rows = first.shape[0] if isinstance(first, Tensor) and first.dim() else "no"
                raise AttributionError(f"{self.method}: a ReLU saw {rows} rows, not the 4·{self.pairs} of "
                                       "[x; x̄; x̄+Δ⁺; x̄+Δ⁻]; the model must keep the batch intact")
            self.calls += 1
            return RevealCancelReLU.apply(first, self.eps)
        if func in SIGN_STEPS:
            return self.signed(func, args, kwargs)
        if not self.tracked(first):
            return func(*args, **kwargs)
        if func in WEIGHTED_FUNCTIONS:
            return self.linear_rule(func, args, kwargs)
        if func is F.batch_norm:
            return self.batch_norm(args, kwargs)
        if func in MAX_POOL_FUNCTIONS:
            return self.max_pool(func, args, kwargs)
        return func(*args, **kwargs)

    @staticmethod
    def swapped(t: Tensor) -> Tensor:
        """``t`` with its parts exchanged: the rows of ``−t``'s parts, up to the sign of every row."""
        x, ref, up, down = t.chunk(4)
        return torch.cat([x, ref, down, up])

    def signed(self, func: Any, args: tuple, kwargs: dict) -> Any:
        """Negation, subtraction, multiplication and division by a constant: where the factor of a tracked operand is
        negative its parts are swapped first, so that ``Δ⁺`` keeps the positive terms (the linear rule, §3.5.1)."""
        args = list(args)
        if len(args) < 2 and "other" in kwargs:
            args.append(kwargs.pop("other"))
        tracked = [self.tracked(a) for a in args[:2]]
        if not any(tracked):
            return func(*args, **kwargs)
        if func in NEGATIONS:
            args[0] = self.swapped(args[0])
        elif func in SUBTRACTIONS | REVERSED_SUBTRACTIONS:
            index = 1 if func in SUBTRACTIONS else 0
            alpha = kwargs.get("alpha", 1)
            if tracked[index] and not (isinstance(alpha, (int, float)) and alpha < 0):
                args[index] = self.swapped(args[index])
        elif all(tracked) or (tracked[1] and func in (torch.div, Tensor.div)):
            raise AttributionError(f"{self.method}: rule='reveal_cancel' has no rule for a product or quotient of "
                                   "two activations (gating); use rule='rescale'")
        else:
            index = 0 if tracked[0] else 1
            factor = args[1 - index]
            if isinstance(factor, Tensor):
                with torch.no_grad():
                    negative = factor < 0
                args[index] = torch.where(negative, self.swapped(args[index]), args[index])
            elif factor < 0:
                args[index] = self.swapped(args[index])
        return func(*args, **kwargs)

    def linear_rule(self, func: Any, args: tuple, kwargs: dict) -> Tensor:
        """``Δz⁺ = ½(W·Δa + |W|·|Δa|)``, ``Δz⁻ = ½(W·Δa − |W|·|Δa|)``: the sums of the positive (negative) terms
        ``w_i Δa_i`` (§3.5.1), from the total ``Δa`` of the input as in the authors' ``Dense``/``Conv`` layers."""
        names = ("input", "weight", "bias")
        weight, bias = (args[i] if i < len(args) else kwargs.get(name) for i, name in ((1, "weight"), (2, "bias")))
        rest = args[3:]
        extra = {k: v for k, v in kwargs.items() if k not in names}
        rows = args[0] if args else kwargs["input"]
        delta = Difference.apply(rows, True)
        out_ref = func(rows.chunk(4)[1].detach(), weight, bias, *rest, **extra)
        lin = func(delta, weight, None, *rest, **extra)
        if id(weight) not in self.abs_weights:  # frozen during the call; a layer called twice pays once
            self.abs_weights[id(weight)] = (weight, weight.abs())  # holding ``weight`` keeps its id unique
        mag = func(delta.abs(), self.abs_weights[id(weight)][1], None, *rest, **extra)
        # the value at x as W·x̄ + b + W·Δa: one convolution fewer than W·x + b, equal up to round-off
        return LinearRows.apply(out_ref, lin, mag)

    def batch_norm(self, args: tuple, kwargs: dict) -> Tensor:
        """Eval-mode BatchNorm scales each channel by ``s = γ/√(σ² + ε)``; the parts swap where ``s < 0`` (the
        authors' ``BatchNormalization`` layer)."""
        names = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
        defaults = (None, None, None, None, None, False, 0.1, 1e-5)
        bound = dict(zip(names, defaults)) | dict(zip(names, args)) | kwargs
        if bound["training"] or bound["running_var"] is None:
            raise AttributionError(f"{self.method}: rule='reveal_cancel' needs BatchNorm with running statistics "
                                   "in eval mode (batch statistics would mix the rows of x, x̄ and the parts)")
        # on all four row groups: the values at x and x̄, and the parts scaled by s (the offsets cancel the shift)
        out = F.batch_norm(*args, **kwargs)
        with torch.no_grad():
            scale = torch.rsqrt(bound["running_var"] + bound["eps"])
            if bound["weight"] is not None:
                scale = scale * bound["weight"]
            flip = (scale < 0).view(1, -1, *([1] * (out.dim() - 2)))
        return torch.where(flip, self.swapped(out), out) if bool(flip.any()) else out

    def max_pool(self, func: Any, args: tuple, kwargs: dict) -> Tensor:
        """The gradient rule (the authors' default ``MaxPoolDeepLiftMode.gradient``): ``Δout = max(x) − max(x̄)``,
        differentiated as the pooled ``Δ⁺ + Δ⁻`` at the arg-max of ``x``; its parts re-split by sign (the authors
        re-derive them at the next linear layer)."""
        rows = args[0] if args else kwargs["input"]
        rest = args[1:]
        extra = {k: v for k, v in kwargs.items() if k != "input"}
        out_x = func(Difference.apply(rows, False), *rest, **extra)
        if not isinstance(out_x, Tensor):
            raise AttributionError(f"{self.method}: rule='reveal_cancel' does not support max pooling with "
                                   "return_indices=True")
        out_ref = func(rows.chunk(4)[1].detach(), *rest, **extra)
        new_pos, new_neg = sign_split(out_x - out_ref)
        return self.rows(out_x, out_ref, new_pos, new_neg)


#: pairs per pass = the memory budget's rows (:mod:`lit_xai.attribution.batching`) // this. Rescale runs ``[x; x̄]``.
#: RevealCancel runs ``[x; x̄; x̄+Δ⁺; x̄+Δ⁻]``, but most of its operators act on one row group at a time, and larger
#: chunks paid off (benchmarks/bench_reveal_cancel.py, timm ResNet-18 at 64², 32 images, 1 thread: rows // 5 pairs
#: 2.5×, // 2 2.0×, // 1 1.9× the Rescale time): // 2, a peak of about twice the budget.
ROWS_PER_PAIR = {"rescale": 2, "reveal_cancel": 2}


def pair_logits(
    model: nn.Module, x: Tensor, ref: Tensor, rule: str, eps: float, method: str
) -> Tensor:
    """Logits at ``x`` whose gradient w.r.t. ``x`` is the DeepLIFT multiplier of ``rule`` (pairs ``(x_i, x̄_i)``)."""
    if rule == "rescale":
        with RescaleMode(eps, method) as mode:
            logits = model(torch.cat([x, ref]))
        require_relus(mode.calls, method)
        return logits[: x.shape[0]]
    pos, neg = sign_split(x - ref)
    with RevealCancelMode(x.shape[0], eps, method) as mode:
        logits = model(RevealCancelMode.rows(x, ref, pos, neg))
    require_relus(mode.calls, method)
    if logits.shape[0] != 4 * x.shape[0]:
        raise AttributionError(f"{method}: the model returned {logits.shape[0]} rows for the 4·{x.shape[0]} rows "
                               "[x; x̄; x̄+Δ⁺; x̄+Δ⁻]; it must keep the batch intact")
    return Difference.apply(logits, False)


def mean_deeplift(
    model: nn.Module, inputs: Tensor, target: Tensor | None, refs: Tensor, paired: bool, eps: float,
    max_batch: int | None, method: str, rule: str = "rescale",
) -> Tensor:
    """``1/K Σ_k (x − x̄_k) ⊙ m(x, x̄_k)`` per image.

    ``paired``: ``refs[i]`` is image ``i``'s only reference (K = 1); otherwise every image meets every reference
    (K = N). Rows ``(image r // K, reference r % K)`` run at most ``max_batch`` pairs per pass; ``None``: the memory
    budget's rows (:mod:`lit_xai.attribution.batching`) over :data:`ROWS_PER_PAIR`. The passes are evened out (the
    same number of passes, sizes differing by at most one).
    """
    batch = inputs.shape[0]
    per_image = 1 if paired else refs.shape[0]
    total = torch.zeros_like(inputs)
    pairs = max_batch if max_batch is not None else max(1, rows_per_chunk(model, inputs) // ROWS_PER_PAIR[rule])
    rows_total = batch * per_image
    passes = -(-rows_total // pairs)
    bounds = [rows_total * i // passes for i in range(passes + 1)]  # 16 pairs by ≤ 9: 8 + 8, not 9 + 7
    for start, end in zip(bounds, bounds[1:]):
        rows = torch.arange(start, end, device=inputs.device)
        images = rows // per_image
        x = inputs[images].requires_grad_(True)
        ref = refs[images] if paired else refs[rows % per_image]
        logits = pair_logits(model, x, ref, rule, eps, method)
        scores, _ = target_scores(logits, None if target is None else target[images])
        (multiplier,) = torch.autograd.grad(scores.sum(), x)
        total.index_add_(0, images, (x.detach() - ref) * multiplier)
    return total / per_image


def check_eps(eps: float, method: str) -> float:
    if not eps >= 0:
        raise AttributionError(f"{method}: eps must be ≥ 0, got {eps!r}")
    return float(eps)


def check_rule(rule: str, method: str) -> str:
    if rule not in RULES:
        raise AttributionError(f"{method}: rule must be one of {', '.join(map(repr, RULES))}, got {rule!r}")
    return rule


@register("deeplift")
class DeepLift(AttributionMethod):
    """DeepLIFT against ``baseline``: ``"zero"`` (Captum's default; the DeepLIFT paper's MNIST
    reference), a float, a tensor ``[C, H, W]``/``[1, C, H, W]`` or one reference per image ``[B, C, H, W]``,
    or a path to a saved tensor. ``rule``: ``"rescale"`` (default: Captum ``DeepLift`` and shap ``DeepExplainer``
    implement only it) or ``"reveal_cancel"`` (§3.5.3; the authors' README: used at all layers for the paper's
    MNIST example). ``Σ map = f(x) − f(x̄)`` on ReLU nets without max pooling, with either rule."""

    def __init__(
        self, baseline: ReferenceSpec = "zero", eps: float = DEFAULT_EPS, max_batch: int | None = None,
        rule: str = "rescale",
    ) -> None:
        check_reference_spec(baseline, "deeplift")
        self.baseline = baseline
        self.eps = check_eps(eps, "deeplift")
        self.max_batch = check_max_batch(max_batch)
        self.rule = check_rule(rule, "deeplift")

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor | None) -> Tensor:
        refs = reference_images(self.baseline, inputs, self.name)
        if refs.shape[0] not in (1, inputs.shape[0]):
            raise AttributionError(f"deeplift: {refs.shape[0]} baselines for {inputs.shape[0]} inputs; give one "
                                   "baseline or one per input (use deepshap to average over a background)")
        refs = refs.expand_as(inputs)
        return mean_deeplift(model, inputs, target, refs, True, self.eps, self.max_batch, self.name, self.rule)


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
