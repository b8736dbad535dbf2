"""Seed methods (PruneGrad, NeuronMCT, NeuronIntGrad, DGR) next to independent implementations on foreign nets.

The nets are those of ``conftest.py``: one in-place ReLU module called three times in a residual block, and
functional ``F.relu`` with max-pooling. Independent references: Captum's ``LayerGradientXActivation`` (on the
functional net, at the convolution outputs: ``|z·∂y/∂z|`` masked to ``z > 0`` is ``|a·∂y/∂a|``), and the nets'
forwards written out by hand with a scale or a mask at one ReLU call (float64; tolerance: ``assert_close``'s float64
default, rtol 1e-7, atol 1e-7, unless stated).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from captum.attr import LayerGradientXActivation
from torch import nn

from lit_xai.attribution import build_method
from lit_xai.pathways import intgrad_contributions, mct_contributions, routing_gates, select_pathway
from lit_xai.pathways.neurons import NeuronGate, gated

torch.set_num_threads(1)


def _functional_forward(net: nn.Module, x: torch.Tensor, edit: dict) -> torch.Tensor:
    """FunctionalReLUNet.forward written out; ``edit[i]`` maps ReLU call i's output to what the net continues with."""
    same = lambda a: a  # noqa: E731
    h = F.max_pool2d(edit.get(0, same)(F.relu(net.conv1(x))), 2)
    h = F.adaptive_max_pool2d(edit.get(1, same)(F.relu(net.conv2(h))), 4)
    return net.fc(h.flatten(1))


def _reused_forward(net: nn.Module, x: torch.Tensor, edit: dict) -> torch.Tensor:
    """ReusedInplaceReLUNet.forward written out (out-of-place), with ``edit`` as above."""
    same = lambda a: a  # noqa: E731
    h = edit.get(0, same)(torch.relu(net.bn(net.stem(x))))
    out = edit.get(1, same)(torch.relu(net.bn1(net.conv1(h))))
    out = edit.get(2, same)(torch.relu(net.bn2(net.conv2(out)) + h))
    return net.head(out.mean((2, 3)))


def _forward_by_hand(net: nn.Module):  # noqa: ANN202
    return _functional_forward if hasattr(net, "fc") else _reused_forward


def test_neuron_mct_matches_captum_at_the_convolutions(functional_relu_net: nn.Module, images: torch.Tensor) -> None:
    """Captum cannot hook functional ReLUs; at the convolution outputs z, |z·∂y/∂z|·[z > 0] = |a·∂y/∂a| (tolerance:
    float32 assert_close default)."""
    net = functional_relu_net
    target = torch.arange(images.shape[0]) % 5
    ours = mct_contributions(net, images, target, "t").contributions
    with torch.no_grad():
        z1 = net.conv1(images)
        z2 = net.conv2(F.max_pool2d(F.relu(z1), 2))
    for layer, (conv, z) in enumerate(((net.conv1, z1), (net.conv2, z2))):
        captum = LayerGradientXActivation(net, conv).attribute(images, target=target)
        torch.testing.assert_close(ours[layer], (captum.abs() * (z > 0)).detach())


def test_neuron_intgrad_equals_the_layer_integral_written_out(foreign_net: nn.Module, images: torch.Tensor) -> None:
    """Eq. 4 with the 5-point midpoint rule: one ReLU call scaled by α, the rest of the net at x."""
    net = foreign_net.double()
    x = images.double()
    forward = _forward_by_hand(net)
    with torch.no_grad():
        target = net(x).argmax(1)
    ours = intgrad_contributions(net, x, target, "t", max_batch=7)  # α and images split over passes
    clean = mct_contributions(net, x, target, "t").activations
    for layer, activation in enumerate(clean):
        total = torch.zeros_like(activation)
        for alpha in (0.1, 0.3, 0.5, 0.7, 0.9):
            scaled = (alpha * activation).requires_grad_(True)
            out = forward(net, x, {layer: lambda _a, s=scaled: s})
            (grad,) = torch.autograd.grad(out.gather(1, target[:, None]).sum(), scaled)
            total = total + grad / 5
        torch.testing.assert_close(ours.contributions[layer], (activation * total).abs())


def test_prune_grad_equals_the_hand_masked_net(foreign_net: nn.Module, images: torch.Tensor) -> None:
    """PruneGrad = ∂y/∂x of the net with the lowest-κ neurons (network-wide) zeroed, every ReLU call masked."""
    net = foreign_net.double()
    x = images.double()
    ours = build_method("prune_grad", sparsity=0.7)(net, x)
    contrib = mct_contributions(net, x, None, "t")
    keep = select_pathway(contrib.contributions, 0.7)
    xg = x.clone().requires_grad_(True)
    out = _forward_by_hand(net)(net, xg, {i: (lambda a, k=k: a * k) for i, k in enumerate(keep)})
    (expected,) = torch.autograd.grad(out.gather(1, contrib.target[:, None]).sum(), xg)
    torch.testing.assert_close(ours, expected)


def test_routing_keeps_the_prediction_on_foreign_nets(foreign_net: nn.Module, images: torch.Tensor) -> None:
    """DGR(init=r) with the authors' γ/10 retry: every returned routing keeps the prediction (or a warning says
    which sample does not)."""
    with torch.no_grad():
        predicted = foreign_net(images).argmax(1)
    template = mct_contributions(foreign_net, images, None, "t").activations
    gates = routing_gates(foreign_net, images, template, "uniform", steps=30)
    with torch.no_grad(), gated(NeuronGate(gates, "zero"), "t"):
        assert torch.equal(foreign_net(images).argmax(1), predicted)
