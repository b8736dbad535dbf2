"""Attribution on multi-label and six-region models (issue 17, docs/tasks.md): every registered method works on
``ClassifierModule.explained_net`` or raises a clear error, and the evaluation callback explains the output the
task's target semantics name (lit_xai/callbacks/targets.py)."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from fast_methods import SWEEP_KWARGS, check_serves
from torch import nn

from lit_xai.attribution import available_methods, build_method
from lit_xai.callbacks import AttributionEvaluation
from lit_xai.callbacks.attribution_eval import CallbackConfigError
from lit_xai.callbacks.targets import check_target, choose_targets, explained_model, targeted_ground_truth
from lit_xai.data import SyntheticChestDataModule
from lit_xai.models import ClassifierModule


def _module(task: str) -> ClassifierModule:
    torch.manual_seed(0)
    classes = {"multilabel": 5, "regions": 6, "regression": 1}[task]
    return ClassifierModule(backbone="digits_cnn", backbone_kwargs={"pooled_size": 4}, task=task,
                            num_classes=classes, in_chans=1).eval()


@pytest.fixture(scope="module", params=["multilabel", "regions"])
def explained(request: pytest.FixtureRequest) -> nn.Module:
    return _module(request.param).explained_net.eval()


@pytest.mark.parametrize("name", available_methods())
def test_every_method_serves_multilabel_and_region_outputs(explained: nn.Module, name: str) -> None:
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    check_serves(explained, name, x, torch.tensor([0, 3]))
    assert not explained.training
    assert all(not m._forward_hooks and not m._backward_hooks for m in explained.modules())


def test_explained_model_is_the_region_score_head_and_target_rules() -> None:
    regions = _module("regions")
    model = explained_model(regions)
    outputs = model(torch.randn(3, 1, 32, 32))
    assert outputs.shape == (3, 6)  # the six expected region scores, not the 24 logits
    multilabel = _module("multilabel")
    assert explained_model(multilabel) is multilabel.net  # no head: the label logits
    target, keep = choose_targets("regions", "prediction", None, torch.zeros(3, 6), outputs)
    assert torch.equal(target, outputs.argmax(1)) and bool(keep.all())
    target, _ = choose_targets("regions", "index", 4, torch.zeros(3, 6), outputs)
    assert target.tolist() == [4, 4, 4]
    with pytest.raises(ValueError, match="target_index=6 but the explained network has 6 outputs"):
        choose_targets("regions", "index", 6, torch.zeros(3, 6), outputs)
    labels = torch.tensor([[0.0, 1, 0, 1, 0], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0]])
    target, keep = choose_targets("multilabel", "label", None, labels, None)
    assert target[keep].tolist() == [1, 0] and keep.tolist() == [True, False, True]  # first positive label
    for task in ("regression", "regions"):
        with pytest.raises(ValueError, match=f"target='label' makes no sense for the {task} task"):
            check_target(task, "label", None)
    with pytest.raises(ValueError, match="target_index"):
        check_target("multilabel", "index", None)


def test_ground_truth_of_the_explained_output() -> None:
    masks = torch.arange(2 * 3 * 2 * 2).view(2, 3, 2, 2)
    boxes = torch.arange(2 * 3 * 4).view(2, 3, 4)
    target = torch.tensor([2, 0])
    assert torch.equal(targeted_ground_truth(masks, target, "masks"), torch.stack([masks[0, 2], masks[1, 0]])[:, None])
    assert torch.equal(targeted_ground_truth(boxes, target, "boxes"), torch.stack([boxes[0, 2], boxes[1, 0]]))
    single = torch.zeros(2, 1, 2, 2)
    assert targeted_ground_truth(single, target, "masks") is single


def _trainer(tmp_path: Path, callback: AttributionEvaluation) -> L.Trainer:
    return L.Trainer(callbacks=[callback], inference_mode=False, default_root_dir=tmp_path, logger=False,
                     accelerator="cpu", enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, limit_test_batches=1)


def test_callback_explains_a_region_and_scores_iou_with_its_mask(tmp_path: Path) -> None:
    callback = AttributionEvaluation(
        methods=[{"name": "gradient"}],
        metrics=[{"name": "localisation_iou"}, {"name": "deletion", "kwargs": {"num_steps": 4, "output": "identity"}}],
        target="index", target_index=2, ground_truth={"masks": "region_masks"}, max_samples=8, num_grid_samples=2,
        num_table_samples=2, output_dir=str(tmp_path / "out"), print_summary=False,
    )
    data = SyntheticChestDataModule(task="regions", num_train=8, num_val=8, num_test=8, image_size=32, batch_size=8)
    results = _trainer(tmp_path, callback).test(_module("regions"), data, verbose=False)[0]
    assert {"attr/test/gradient/localisation_iou", "attr/test/random/deletion"} <= set(results)
    assert 0.0 <= results["attr/test/gradient/localisation_iou"] <= 1.0


def test_callback_multilabel_first_positive_label_and_clear_errors(tmp_path: Path) -> None:
    callback = AttributionEvaluation(
        methods=[{"name": "gradient"}], metrics=[{"name": "localisation_iou", "kwargs": {"ground_truth": "boxes"}}],
        target="label", ground_truth={"boxes": "concept_boxes"}, max_samples=8, num_grid_samples=2,
        num_table_samples=0, output_dir=str(tmp_path / "out"), print_summary=False,
    )
    data = SyntheticChestDataModule(task="multilabel", num_train=8, num_val=8, num_test=8, image_size=32,
                                    batch_size=8)
    results = _trainer(tmp_path, callback).test(_module("multilabel"), data, verbose=False)[0]
    assert "attr/test/gradient/localisation_iou" in results
    wrong = AttributionEvaluation(methods=[{"name": "gradient"}], metrics=[{"name": "deletion"}], target="label")
    regression = SyntheticChestDataModule(task="regression", num_train=8, num_val=8, num_test=8, image_size=32)
    with pytest.raises(CallbackConfigError, match="target='label' makes no sense for the regression task"):
        _trainer(tmp_path, wrong).test(_module("regression"), regression, verbose=False)


class Quadrants(nn.Module):
    """Output k = 4 · (mean feature in image quadrant k) − 2, k = top-left, top-right, bottom-left, bottom-right:
    each label logit (or region score) depends on one quadrant only."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Conv2d(1, 4, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.act(self.features(x)).mean(1)
        half = mean.shape[-1] // 2
        return 4 * mean.unflatten(1, (2, half)).unflatten(3, (2, half)).mean((2, 4)).flatten(1) - 2


def test_bce_task_loss_is_the_explained_labels_binary_cross_entropy() -> None:
    from lit_xai.attribution.information.iba import classification_loss

    logits = torch.tensor([[0.3, -1.2, 2.0], [1.5, 0.1, -0.4]])
    target = torch.tensor([1, 2])
    loss = classification_loss(target, 2, "bce")(logits.repeat_interleave(2, 0))
    z = torch.tensor([-1.2, -1.2, -0.4, -0.4])
    torch.testing.assert_close(loss, -torch.log(1 / (1 + torch.exp(-z))))  # −log σ(z_t), hand formula
    torch.testing.assert_close(loss, torch.nn.functional.binary_cross_entropy_with_logits(z, torch.ones(4),
                                                                                        reduction="none"))
    with pytest.raises(ValueError, match="task_loss"):
        build_method("iba", task_loss="mse")


@pytest.mark.parametrize(("name", "kwargs"), [
    ("iba", {"layer": "features", "task_loss": "bce"}),
    ("inverse_iba", {"layer": "features", "task_loss": "bce"}),
    ("multilayer_iba", {"layers": ["features", "act"], "task_loss": "bce"}),
    ("regression_iba", {"layer": "features", "loss": "deviation", "beta": 0.1}),
    ("regression_iba", {"layer": "features", "loss": "mse", "target_value": 0.0, "beta": 0.1}),
    ("regression_iba", {"layer": "features", "loss": "maximisation"}),
])
def test_bottleneck_of_a_quadrant_output_concentrates_in_its_quadrant(name: str, kwargs: dict) -> None:
    """Output 1 depends only on the top-right quadrant: the map's mass there is far above the uniform 1/4.
    (β = 1 and 40 steps: at the default 10 steps the masks of this 16² toy barely leave their initial value; the
    squared deviation/MSE losses have zero gradient where Φ(Z) = Φ(X), so they need a smaller β, 0.1, here.)"""
    model = Quadrants().eval()
    x = torch.randn(8, 1, 16, 16, generator=torch.Generator().manual_seed(1)).abs()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no feature statistics.*")
        settings = {"beta": 1.0, "steps": 40, **kwargs}
        maps = build_method(name, **settings)(model, x, torch.full((8,), 1)).float()
    maps = torch.nn.functional.interpolate(maps, size=(16, 16)) if maps.shape[-1] != 16 else maps
    inside = maps[..., :8, 8:].sum((1, 2, 3)) / maps.sum((1, 2, 3)).clamp_min(1e-12)
    assert float(inside.mean()) > 0.7


def test_input_iba_takes_the_bce_task_loss() -> None:
    model = Quadrants().eval()
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1)).abs()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no feature statistics.*")
        maps = build_method("input_iba", layer="features", task_loss="bce", **SWEEP_KWARGS["input_iba"])(model, x,
                                                                                                 torch.tensor([1, 1]))
    assert maps.shape == (2, 1, 16, 16) and bool(torch.isfinite(maps).all())
    with pytest.raises(ValueError, match="task_loss"):
        build_method("input_iba", task_loss="mse")
