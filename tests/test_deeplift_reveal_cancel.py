"""DeepLIFT's RevealCancel rule (Shrikumar et al. 2017 §3.5.3; issue 15): the paper's min network, a layer-by-layer
reference written from the paper and the authors' layer rules, summation-to-delta, agreement with Rescale where no
unit mixes signs, the contract."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from captum.attr import DeepLift as CaptumDeepLift
from torch import nn

from lit_xai.attribution import AttributionError, build_method, get_class

_spec = importlib.util.spec_from_file_location(
    "conformance_nets", Path(__file__).resolve().parent / "conformance" / "conftest.py"
)
conformance_nets = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(conformance_nets)

#: authors' ``deeplift.util.NEAR_ZERO_THRESHOLD`` (the pseudocount of ``helper_functions.pseudocount_near_zero``)
AUTHORS_PSEUDOCOUNT = 1e-7


class MinNet(nn.Module):
    """§3.6 / Fig. 3: ``h = ReLU(i₁ − i₂)``, ``o = i₁ − h = min(i₁, i₂)`` (no biases)."""

    def __init__(self) -> None:
        super().__init__()
        self.diff = nn.Linear(2, 1, bias=False)
        self.out = nn.Linear(3, 1, bias=False)
        with torch.no_grad():
            self.diff.weight.copy_(torch.tensor([[1.0, -1.0]]))
            self.out.weight.copy_(torch.tensor([[1.0, 0.0, -1.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return self.out(torch.cat([x, F.relu(self.diff(x))], 1))


class BiasedMLP(nn.Module):
    """Flatten → Linear → BatchNorm1d (some negative scales) → ReLU → Linear → ReLU (functional) → Linear."""

    def __init__(self, seed: int, features: int = 8, width: int = 12, classes: int = 3) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fc1, self.fc2, self.fc3 = nn.Linear(features, width), nn.Linear(width, width), nn.Linear(width, classes)
        self.bn = nn.BatchNorm1d(width)
        self.relu = nn.ReLU(inplace=True)
        with torch.no_grad():
            self.bn.weight.uniform_(-1.5, 1.5)
            self.bn.bias.uniform_(-0.3, 0.3)
            self.bn.running_mean.uniform_(-0.3, 0.3)
            self.bn.running_var.uniform_(0.5, 1.5)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.bn(self.fc1(x.flatten(1))))
        return self.fc3(F.relu(self.fc2(h)))


def pseudocount(t: torch.Tensor) -> torch.Tensor:
    """The authors' ``pseudocount_near_zero``: ±1e-7 where |t| < 0.5e-7 (sign kept, + for 0)."""
    near = t.abs() < 0.5 * AUTHORS_PSEUDOCOUNT
    return t + AUTHORS_PSEUDOCOUNT * (near & (t >= 0)) - AUTHORS_PSEUDOCOUNT * (near & (t < 0))


def reference_reveal_cancel(net: BiasedMLP, x: torch.Tensor, ref: torch.Tensor, target: int) -> torch.Tensor:
    """An independent layer-by-layer DeepLIFT-RevealCancel for :class:`BiasedMLP`, one image, float64.

    Written from §3.5.1/§3.5.3 and the layer rules of the authors' ``deeplift`` package: a dense layer splits
    ``w_i Δa_i`` by sign from its input's total difference, passing inputs with ``Δa_i = 0`` the mean of both
    multipliers; BatchNorm scales the two parts (swapping them where the scale is negative); the ReLU multipliers
    ``m± = Δy±/Δz±`` use the pseudocount. Explicit weight matrices and masks, no autograd.
    """
    def dense(layer: nn.Linear, a: torch.Tensor, a_ref: torch.Tensor):
        w = layer.weight.double()
        d = a - a_ref
        dp, dn = d * (d > 0), d * (d < 0)
        wp, wn = w * (w > 0), w * (w < 0)
        return (a @ w.T + layer.bias.double(), a_ref @ w.T + layer.bias.double(),
                dp @ wp.T + dn @ wn.T, dp @ wn.T + dn @ wp.T, (d, wp, wn, w))

    def relu_rule(z_ref: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor):
        pos, neg = pseudocount(pos), pseudocount(neg)
        f = torch.relu
        dy_pos = 0.5 * (f(z_ref + pos) - f(z_ref)) + 0.5 * (f(z_ref + neg + pos) - f(z_ref + neg))
        dy_neg = 0.5 * (f(z_ref + neg) - f(z_ref)) + 0.5 * (f(z_ref + pos + neg) - f(z_ref + pos))
        return dy_pos / pos, dy_neg / neg

    def dense_back(saved, m_pos: torch.Tensor, m_neg: torch.Tensor) -> torch.Tensor:
        d, wp, wn, w = saved
        return ((d > 0) * (m_pos @ wp + m_neg @ wn) + (d < 0) * (m_pos @ wn + m_neg @ wp)
                + (d == 0) * (0.5 * (m_pos + m_neg) @ w))

    x, ref = x.double().flatten()[None], ref.double().flatten()[None]
    z1, z1_ref, p1, n1, saved1 = dense(net.fc1, x, ref)
    bn = net.bn
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).double()
    sp, sn = scale * (scale > 0), scale * (scale < 0)
    b1, b1_ref = (z1 - bn.running_mean.double()) * scale + bn.bias.double(), (
        z1_ref - bn.running_mean.double()) * scale + bn.bias.double()
    bp, bnn = p1 * sp + n1 * sn, n1 * sp + p1 * sn
    mp1, mn1 = relu_rule(b1_ref, bp, bnn)
    a1, a1_ref = torch.relu(b1), torch.relu(b1_ref)
    z2, z2_ref, p2, n2, saved2 = dense(net.fc2, a1, a1_ref)
    mp2, mn2 = relu_rule(z2_ref, p2, n2)
    a2, a2_ref = torch.relu(z2), torch.relu(z2_ref)
    _, _, _, _, saved3 = dense(net.fc3, a2, a2_ref)
    onehot = torch.zeros(1, net.fc3.out_features, dtype=torch.float64)
    onehot[0, target] = 1.0
    m_a2 = dense_back(saved3, onehot, onehot)
    m_b1_pos, m_b1_neg = mp2 * m_a2, mn2 * m_a2
    m_a1 = dense_back(saved2, m_b1_pos, m_b1_neg)
    m_z1_pos, m_z1_neg = mp1 * m_a1, mn1 * m_a1          # at the ReLU input (after BN) ...
    m_pos, m_neg = m_z1_pos * sp + m_z1_neg * sn, m_z1_pos * sn + m_z1_neg * sp   # ... and before BN
    m_x = dense_back(saved1, m_pos, m_neg)
    return ((x - ref) * m_x).view(1, -1, 1, 1)


def test_defaults_are_captums():
    """``rule="rescale"`` (Captum ``DeepLift`` implements only Rescale), ``eps=1e-10`` (Captum ``DeepLift(eps=1e-10)``),
    ``baseline="zero"`` (Captum ``baselines=None``), ``max_batch=None`` (the memory budget)."""
    params = inspect.signature(get_class("deeplift").__init__).parameters
    assert {k: p.default for k, p in params.items() if k != "self"} == {
        "baseline": "zero", "eps": 1e-10, "max_batch": None, "rule": "rescale"}
    captum = inspect.signature(CaptumDeepLift.__init__).parameters
    assert captum["eps"].default == 1e-10


# ---------------------------------------------------------------- (a) the paper's min network


@pytest.mark.parametrize("i1, i2", [(3.0, 1.0), (1.0, 3.0), (2.0, 0.5)])
def test_min_network_splits_evenly_under_reveal_cancel_only(i1, i2):
    """Fig. 3, reference (0, 0). Rescale: Δh = i₁ − i₂ passes whole (m = 1) when i₁ > i₂, so C(i₁) = i₁(1 − 1) = 0
    and C(i₂) = min; when i₁ < i₂, m = 0 and C(i₁) = min, C(i₂) = 0 — all to the smaller input.
    RevealCancel: Δh⁺ = i₁, Δh⁻ = −i₂ at the ReLU; for i₁ > i₂: Δy⁺ = ½i₁ + ½(i₁ − i₂) = i₁ − ½i₂, Δy⁻ = −½i₂,
    so C(i₁) = i₁ − Δy⁺ = ½i₂ and C(i₂) = i₂·m⁻ = ½i₂; for i₁ < i₂: Δy⁺ = ½i₁, Δy⁻ = −½i₁, C = (½i₁, ½i₁).
    Both: ½ min(i₁, i₂) each, the symmetric split §3.6 describes."""
    x = torch.tensor([i1, i2]).view(1, 2, 1, 1)
    low = min(i1, i2)
    rescale = build_method("deeplift")(MinNet(), x, 0).flatten()
    reveal = build_method("deeplift", rule="reveal_cancel")(MinNet(), x, 0).flatten()
    torch.testing.assert_close(rescale, torch.tensor([0.0, low] if i1 > i2 else [low, 0.0]))
    torch.testing.assert_close(reveal, torch.tensor([0.5 * low, 0.5 * low]))


# ---------------------------------------------------------------- (b) the authors' layer rules, completeness


@pytest.mark.parametrize("seed", range(6))
def test_matches_a_layer_by_layer_reference_on_biased_mlps(seed):
    """Batched maps = :func:`reference_reveal_cancel` per image. Tolerance 1e-5·max|map| (float32 vs float64)."""
    net = BiasedMLP(seed)
    gen = torch.Generator().manual_seed(seed)
    x, ref = torch.randn(4, 8, 1, 1, generator=gen), 0.5 * torch.randn(1, 8, 1, 1, generator=gen)
    ours = build_method("deeplift", baseline=ref, rule="reveal_cancel")(net, x, 1)
    theirs = torch.cat([reference_reveal_cancel(net, x[i], ref, 1) for i in range(4)]).float()
    assert (ours - theirs).abs().max() <= 1e-5 * theirs.abs().max()
    rescale = build_method("deeplift", baseline=ref)(net, x, 1)
    assert (rescale - theirs).abs().max() > 1e-2 * theirs.abs().max()   # the test could not pass by Rescale


class SplitSecondLayer(nn.Module):
    """:class:`BiasedMLP` with ``fc2`` written as ``A·h − B·h + b`` (``A = W⁺``, ``B = −W⁻``, both non-negative) in
    the given ``form``: every term ``w_ij Δh_j`` of ``W·Δh`` appears once, so the sign split must be the same."""

    def __init__(self, net: BiasedMLP, form: str) -> None:
        super().__init__()
        self.net, self.form = net, form
        w = net.fc2.weight.detach()
        self.plus, self.minus = nn.Linear(w.shape[1], w.shape[0], bias=False), nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            self.plus.weight.copy_(w.clamp_min(0))
            self.minus.weight.copy_(-w.clamp_max(0))
            self.minus.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        h = n.relu(n.bn(n.fc1(x.flatten(1))))
        a, b, bias = self.plus(h), self.minus(h), n.fc2.bias
        z = {
            "sub": lambda: a - b + bias,
            "scalar": lambda: a + b * -1.0 + bias,
            "tensor": lambda: a + b * -torch.ones_like(bias) + bias,
            "div": lambda: a + b / -1.0 + bias,
            "neg": lambda: a + torch.neg(b) + bias,
            "rsub": lambda: bias - (b - a),
        }[self.form]()
        return n.fc3(F.relu(z))


@pytest.mark.parametrize("form", ["sub", "scalar", "tensor", "div", "neg", "rsub"])
def test_sign_flipping_steps_keep_the_terms_split(form):
    """Subtraction, negation and negative factors swap the parts of what they negate: ``A·h − B·h`` gives the
    RevealCancel map of ``W·h`` (1e-5·max|map|), not the one of a sum whose parts cancel before the ReLU."""
    net = BiasedMLP(7)
    gen = torch.Generator().manual_seed(8)
    x, ref = torch.randn(4, 8, 1, 1, generator=gen), torch.randn(1, 8, 1, 1, generator=gen)
    expected = build_method("deeplift", baseline=ref, rule="reveal_cancel")(net, x, 0)
    got = build_method("deeplift", baseline=ref, rule="reveal_cancel")(SplitSecondLayer(net, form), x, 0)
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()


class InPlaceNegation(nn.Module):
    """:class:`BiasedMLP` with ``fc2``'s output negated in place (``mul_(-1)``, which has no sign rule): the parts
    reach the ReLU with the wrong signs and are re-split there."""

    def __init__(self, net: BiasedMLP) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        z = n.fc2(n.relu(n.bn(n.fc1(x.flatten(1)))))
        z.mul_(-1)
        return n.fc3(F.relu(z))


def test_parts_of_the_wrong_sign_are_resplit_at_the_relu():
    """An unhandled in-place negation before a ReLU gives the map of the net with ``fc2`` negated (1e-5·max|map|):
    the re-split swaps Δz⁺ and Δz⁻ in the values and routes each multiplier back to the part it came from."""
    net = BiasedMLP(5)
    negated = BiasedMLP(5)
    with torch.no_grad():
        negated.fc2.weight.neg_()
        negated.fc2.bias.neg_()
    gen = torch.Generator().manual_seed(9)
    x, ref = torch.randn(4, 8, 1, 1, generator=gen), torch.randn(1, 8, 1, 1, generator=gen)
    expected = build_method("deeplift", baseline=ref, rule="reveal_cancel")(negated, x, 0)
    got = build_method("deeplift", baseline=ref, rule="reveal_cancel")(InPlaceNegation(net), x, 0)
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()
    torch.testing.assert_close(got.sum((1, 2, 3)), summation_gap(negated, x, ref, torch.zeros(4, dtype=torch.long)),
                               rtol=1e-5, atol=1e-5)


class RowRecorder(nn.Module):
    """Records the rows of every forward."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.rows = net, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows.append(x.shape[0])
        return self.net(x)


@pytest.mark.parametrize("rule, rows_per_pair", [("rescale", 2), ("reveal_cancel", 4)])
def test_passes_are_evened_out(rule, rows_per_pair):
    """5 pairs with at most 4 per pass: two passes of 3 and 2 pairs (not 4 and 1), one map."""
    net = RowRecorder(BiasedMLP(2))
    x = torch.randn(5, 8, 1, 1, generator=torch.Generator().manual_seed(3))
    chunked = build_method("deeplift", rule=rule, max_batch=4)(net, x, 1)
    assert sorted(net.rows) == [2 * rows_per_pair, 3 * rows_per_pair]
    torch.testing.assert_close(chunked, build_method("deeplift", rule=rule)(net, x, 1), rtol=1e-5, atol=1e-6)


def summation_gap(net: nn.Module, x: torch.Tensor, ref: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net(x)[torch.arange(len(x)), target] - net(ref)[0, target]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_summation_to_delta_on_biased_mlps(seed):
    """Σ map = f(x) − f(x̄) for every image and class, to 1e-5 (float32)."""
    net = BiasedMLP(seed)
    gen = torch.Generator().manual_seed(10 + seed)
    x, ref = torch.randn(5, 8, 1, 1, generator=gen), torch.randn(1, 8, 1, 1, generator=gen)
    for cls in range(3):
        target = torch.full((5,), cls)
        got = build_method("deeplift", baseline=ref, rule="reveal_cancel")(net, x, target)
        torch.testing.assert_close(got.sum((1, 2, 3)), summation_gap(net, x, ref, target), rtol=1e-5, atol=1e-5)


def test_summation_to_delta_on_the_reused_inplace_relu_net():
    """The conformance net with one in-place ReLU called three times per block, BatchNorm and a residual add."""
    net = conformance_nets._randomised_eval(conformance_nets.ReusedInplaceReLUNet(), seed=1)
    gen = torch.Generator().manual_seed(0)
    x, ref = torch.randn(6, 3, 16, 16, generator=gen), 0.3 * torch.randn(1, 3, 16, 16, generator=gen)
    target = torch.tensor([0, 1, 2, 3, 4, 0])
    got = build_method("deeplift", baseline=ref, rule="reveal_cancel")(net, x, target)
    torch.testing.assert_close(got.sum((1, 2, 3)), summation_gap(net, x, ref, target), rtol=1e-4, atol=1e-5)
    rescale = build_method("deeplift", baseline=ref)(net, x, target)
    assert float(torch.corrcoef(torch.stack([got.flatten(), rescale.flatten()]))[0, 1]) < 0.99


def test_functional_relu_net_with_max_pooling_runs_batched():
    """F.relu + functional max pooling: the gradient rule at max pooling (no exact completeness, as for Rescale);
    the batched map equals the image-by-image maps, and the sum stays within the Rescale map's distance of Δf."""
    torch.manual_seed(0)
    net = conformance_nets.FunctionalReLUNet().eval()
    gen = torch.Generator().manual_seed(0)
    x, ref = torch.randn(4, 3, 16, 16, generator=gen), 0.3 * torch.randn(1, 3, 16, 16, generator=gen)
    method = build_method("deeplift", baseline=ref, rule="reveal_cancel", max_batch=3)
    got = method(net, x, 2)
    one_by_one = torch.cat([method(net, x[i : i + 1], 2) for i in range(4)])
    torch.testing.assert_close(got, one_by_one, rtol=1e-5, atol=1e-6)
    gap = summation_gap(net, x, ref, torch.full((4,), 2))
    assert (got.sum((1, 2, 3)) - gap).abs().max() <= 0.5 * gap.abs().max()


# ---------------------------------------------------------------- (c) equal to Rescale without mixed signs


class PositiveConvNet(nn.Module):
    """Conv/BN/linear with non-negative weights and scales, a reused in-place ReLU, a residual add."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv1, self.conv2 = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.bn, self.fc, self.relu = nn.BatchNorm2d(4), nn.Linear(4, 3), nn.ReLU(inplace=True)
        with torch.no_grad():
            for p in (self.conv1.weight, self.conv2.weight, self.fc.weight):
                p.abs_()
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.running_mean.uniform_(-0.3, 0.3)
            self.bn.running_var.uniform_(0.5, 1.5)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn(self.conv1(x)))
        out = self.relu(self.conv2(x))
        return self.fc(self.relu(out + x).mean((2, 3)))


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_equals_rescale_where_no_unit_receives_mixed_signs(sign):
    """Non-negative weights and x − x̄ of one sign: every contribution has that sign, Δz∓ = 0, and
    Δy± = ½(f(z̄+Δz±) − f(z̄)) + ½(f(z̄+Δz±) − f(z̄)) is the Rescale difference. Tolerance 1e-5·max|map|."""
    net = PositiveConvNet()
    gen = torch.Generator().manual_seed(4)
    ref = torch.randn(1, 2, 8, 8, generator=gen)
    x = ref + sign * torch.rand(3, 2, 8, 8, generator=gen)
    reveal = build_method("deeplift", baseline=ref, rule="reveal_cancel")(net, x, 1)
    rescale = build_method("deeplift", baseline=ref)(net, x, 1)
    assert (reveal - rescale).abs().max() <= 1e-5 * rescale.abs().max()


# ---------------------------------------------------------------- (d) contract, errors


def model_state(model: nn.Module) -> tuple:
    return ([m.training for m in model.modules()], [(p.requires_grad, p.grad) for p in model.parameters()],
            {k: v.clone() for k, v in model.state_dict().items()},
            [len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()])


class FailingMidway(nn.Module):
    """Raises after its first ReLU call, inside the method's forward."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        F.relu(self.net.bn(self.net.conv1(x)))
        raise RuntimeError("injected failure")


def test_model_left_as_found_on_success_and_on_failure():
    net = PositiveConvNet().train()
    net.conv1.weight.requires_grad_(False)
    before = model_state(net)
    x = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(5))
    build_method("deeplift", rule="reveal_cancel")(net, x, 0)
    after = model_state(net)
    assert before[0] == after[0] and before[1] == after[1] and before[3] == after[3]
    assert all(torch.equal(before[2][k], after[2][k]) for k in before[2])
    with pytest.raises(RuntimeError, match="injected failure"):
        build_method("deeplift", rule="reveal_cancel")(FailingMidway(net), x, 0)
    again = model_state(net)
    assert before[0] == again[0] and before[1] == again[1] and before[3] == again[3]
    assert not torch._C._is_torch_function_mode_enabled()


def test_batched_chunked_and_float64_agree():
    """Chunks of 1, 2 and all pairs give one map, also inside inference mode; float64 inputs (and weights) agree with
    float32 to 1e-4."""
    net = BiasedMLP(4)
    gen = torch.Generator().manual_seed(6)
    x, refs = torch.randn(5, 8, 1, 1, generator=gen), torch.randn(5, 8, 1, 1, generator=gen)
    maps = [build_method("deeplift", baseline=refs, rule="reveal_cancel", max_batch=b)(net, x, 2) for b in (1, 2, None)]
    torch.testing.assert_close(maps[0], maps[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(maps[0], maps[2], rtol=1e-5, atol=1e-6)
    with torch.inference_mode():  # as Trainer.validate/test call it
        inside = build_method("deeplift", baseline=refs, rule="reveal_cancel")(net, x.clone(), 2)
    torch.testing.assert_close(inside, maps[2])
    wide = build_method("deeplift", baseline=refs.double(), rule="reveal_cancel")(net.double(), x.double(), 2)
    assert wide.dtype == torch.float64
    torch.testing.assert_close(wide.float(), maps[2], rtol=1e-4, atol=1e-5)


class GatedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv(x))
        return (h * torch.sigmoid(h.mean((2, 3), keepdim=True))).mean((2, 3))


def test_clear_errors():
    x = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(7))
    with pytest.raises(AttributionError, match="rule must be one of 'rescale', 'reveal_cancel'"):
        build_method("deeplift", rule="revealcancel")
    with pytest.raises(AttributionError, match="reveal_cancel.*torch.sigmoid.*use rule='rescale'"):
        build_method("deeplift", rule="reveal_cancel")(GatedNet(), x, 0)
    build_method("deeplift")(GatedNet(), x, 0)   # Rescale passes gates through as gradients
    no_stats = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3, track_running_stats=False), nn.ReLU(),
                             nn.Flatten(), nn.Linear(108, 2))
    with pytest.raises(AttributionError, match="BatchNorm with running statistics"):
        build_method("deeplift", rule="reveal_cancel")(no_stats, x, 0)
    grouped = nn.Sequential(nn.Conv2d(2, 4, 3), nn.GroupNorm(2, 4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2))
    with pytest.raises(AttributionError, match="reveal_cancel.*nn.GroupNorm"):
        build_method("deeplift", rule="reveal_cancel")(grouped, x, 0)

    class Squared(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = F.relu(x.flatten(1))
            return (h * h)[:, :2]

    with pytest.raises(AttributionError, match="product or quotient of two activations"):
        build_method("deeplift", rule="reveal_cancel")(Squared(), x, 0)
    with pytest.raises(AttributionError, match="ReLU.*the model calls nn.GELU"):
        build_method("deeplift", rule="reveal_cancel")(nn.Sequential(nn.Conv2d(2, 3, 3), nn.GELU(), nn.Flatten(),
                                                                     nn.Linear(108, 2)), x, 0)
