"""The pass-saving paths of PruneGrad / NeuronMCT give the maps of the plain two-pass computation, exactly (float64):

- NeuronMCT's constant-replacement pathway gradient from the scoring pass's retained graph (mask hooks on the ReLU
  outputs) instead of a second, gated forward;
- the pruned network of PruneGrad, PruneGrad-Mid and PrunePGD with the masks applied in place (``PrunedReLUs``)
  instead of ``NeuronGate(keep, "zero")``'s multiplication node.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from lit_xai.attribution import AttributionError, build_method, pathway_grad, pruning
from lit_xai.attribution.base import target_scores
from lit_xai.models.backbones import build_backbone
from lit_xai.pathways.contributions import mct_contributions
from lit_xai.pathways.neurons import NeuronGate, gated
from lit_xai.pathways.selection import select_pathway

torch.set_num_threads(1)


def _model(net: str) -> tuple[nn.Module, torch.Tensor]:
    from tests.conformance.conftest import FunctionalReLUNet, ReusedInplaceReLUNet, _randomised_eval

    torch.manual_seed(0)
    if net == "resnet8":
        return build_backbone("resnet8", num_classes=10, in_chans=3).eval().double(), torch.randn(2, 3, 32, 32).double()
    model = _randomised_eval(ReusedInplaceReLUNet() if net == "reused_relu" else FunctionalReLUNet(), seed=1)
    return model.double(), torch.randn(3, 3, 16, 16).double()


def _gated_pathway_gradient(model: nn.Module, x: torch.Tensor, sparsity: float) -> torch.Tensor:
    """NeuronMCT's map as two passes: the scoring pass, then the gated (constant replacement) network's gradient."""
    for p in model.parameters():
        p.requires_grad_(False)
    contrib = mct_contributions(model, x, None, "t")
    keep = select_pathway(contrib.contributions, sparsity)
    xg = x.detach().requires_grad_(True)
    with gated(NeuronGate(keep, "constant", contrib.activations), "t"):
        logits = model(xg)
    (grad,) = torch.autograd.grad(target_scores(logits, contrib.target)[0].sum(), xg)
    for p in model.parameters():
        p.requires_grad_(True)
    return grad


@pytest.mark.parametrize("net", ["reused_relu", "functional_relu", "resnet8"])
def test_neuron_mct_takes_the_retained_graph_and_equals_the_gated_pass(
    net: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, x = _model(net)
    retained = []
    original = pathway_grad.retained_pathway_gradient
    monkeypatch.setattr(pathway_grad, "retained_pathway_gradient", lambda g, k: retained.append(1) or original(g, k))
    for sparsity in (0.3, 0.9):
        assert torch.equal(build_method("neuron_mct", sparsity=sparsity)(model, x), _gated_pathway_gradient(
            model, x, sparsity)), sparsity
    assert len(retained) == 2
    for p in model.parameters():  # no hook, no flag, no grad left behind
        assert p.requires_grad and p.grad is None and not p._backward_hooks


@contextlib.contextmanager
def _multiplied(keep: list[torch.Tensor], method: str) -> Iterator[object]:
    with gated(NeuronGate(keep, "zero"), method) as mode:
        yield mode


@pytest.mark.parametrize("net", ["reused_relu", "functional_relu", "resnet8"])
@pytest.mark.parametrize(("name", "kwargs"), [
    ("prune_grad", {}), ("prune_grad_mid", {}), ("prune_pgd", {"steps": 3}), ("pathway_grad", {"replacement": "zero"}),
])
def test_masks_in_place_equal_the_multiplied_gate(
    net: str, name: str, kwargs: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, x = _model(net)
    if name == "prune_grad_mid":
        kwargs = {"layer": {"resnet8": "layer2", "reused_relu": "bn2", "functional_relu": "conv2"}[net]}
    method = build_method(name, sparsity=0.7, **kwargs)
    fast = method(model, x)
    monkeypatch.setattr(pruning, "pruned", _multiplied)
    monkeypatch.setattr(pathway_grad, "pruned", _multiplied)
    assert torch.equal(fast, method(model, x))


def test_pruned_relus_name_what_does_not_fit() -> None:
    torch.manual_seed(0)
    model, x = _model("functional_relu")
    keep = [torch.ones(3, 8, 16, 16, dtype=torch.float64)]
    with pytest.raises(AttributionError, match="more ReLU calls"), pathway_grad.pruned(keep, "m"):
        model(x)
    keep = [torch.ones(3, 8, 16, 16, dtype=torch.float64), torch.ones(3, 16, 4, 4, dtype=torch.float64)]
    with pytest.raises(AttributionError, match="pruning mask of ReLU call 1 has shape"), pathway_grad.pruned(keep, "m"):
        model(x)
    keep[1] = torch.ones(3, 16, 8, 8, dtype=torch.float64)
    keep.append(torch.ones(1))
    with pytest.raises(AttributionError, match="made 2 ReLU calls, the masks cover 3"), pathway_grad.pruned(keep, "m"):
        model(x)
