"""Tasks of the classifier module: the chapters' losses (seed 002 Eq. 1-4) written out by hand, metrics, training."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from lit_xai.data.chest import SyntheticChestDataModule
from lit_xai.models.classifier import ClassifierModule, ConfigurationError
from lit_xai.models.tasks import ExpectedRegionScores, build_task, positive_weight, value_weights


def test_multilabel_loss_is_equation_1():
    logits = torch.randn(6, 5, dtype=torch.float64)
    labels = (torch.rand(6, 5) < 0.3).double()
    labels[0, 0] = 1
    y_hat = logits.sigmoid()
    beta = (labels == 0).sum() / (labels == 1).sum()
    by_hand = -(beta * labels * y_hat.log() + (1 - labels) * (1 - y_hat).log()).sum(1).mean()
    task = build_task("multilabel", 5)
    torch.testing.assert_close(task.loss(logits, labels), by_hand)
    unweighted = -(labels * y_hat.log() + (1 - labels) * (1 - y_hat).log()).sum(1).mean()
    torch.testing.assert_close(build_task("multilabel", 5, weighting="none").loss(logits, labels), unweighted)
    assert float(positive_weight(torch.zeros(3, 2))) == 1.0  # no positives: the positive term is empty


def test_regression_loss_is_equation_2_with_balanced_value_weights():
    outputs = torch.randn(6, 1, dtype=torch.float64)
    targets = torch.tensor([0.0, 0.0, 0.0, 4.0, 4.0, 9.0], dtype=torch.float64)
    weights = value_weights(targets)
    # inverse counts 1/3, 1/3, 1/3, 1/2, 1/2, 1 normalised to mean 1: each value carries the same total weight
    assert torch.allclose(weights[[0, 3, 5]] * torch.tensor([3.0, 2.0, 1.0], dtype=weights.dtype), weights[5].expand(3))
    assert abs(float(weights.mean()) - 1) < 1e-6
    by_hand = (weights.double() * (outputs[:, 0] - targets).square()).mean()
    torch.testing.assert_close(build_task("regression", 1).loss(outputs, targets), by_hand)
    plain = (outputs[:, 0] - targets).square().mean()
    torch.testing.assert_close(build_task("regression", 1, weighting="none").loss(outputs, targets), plain)


def test_regions_loss_is_equations_3_and_4():
    logits = torch.randn(3, 24, dtype=torch.float64)
    labels = torch.randint(0, 4, (3, 6))
    p = logits.view(3, 6, 4).softmax(-1)
    scce = -p.gather(2, labels[..., None]).log().mean()
    expected = (p * torch.arange(4.0, dtype=torch.float64)).sum(-1)
    mae_d = (labels - expected).abs().mean()
    torch.testing.assert_close(build_task("regions", 6).loss(logits, labels), scce + mae_d)
    torch.testing.assert_close(ExpectedRegionScores(6)(logits), expected)
    with pytest.raises(ValueError, match="regions task"):
        build_task("regions", 6).loss(torch.randn(3, 10), labels)


def test_bad_tasks_are_configuration_errors():
    with pytest.raises(ConfigurationError, match="unknown task 'segmentation'"):
        ClassifierModule(task="segmentation")
    with pytest.raises(ConfigurationError, match="one output"):
        ClassifierModule(task="regression", num_classes=3)
    with pytest.raises(ConfigurationError, match="weighting"):
        ClassifierModule(task="multilabel", num_classes=5, weighting="inverse")


@pytest.mark.parametrize(
    ("task", "targets", "outputs", "logged"),
    [("multilabel", 5, 5, {"auroc", "f1"}), ("regression", 1, 1, {"mae", "r2"}), ("regions", 6, 24, {"acc", "mae"})],
)
def test_each_task_trains_and_explains(task, targets, outputs, logged, tmp_path):
    data = SyntheticChestDataModule(task=task, num_train=48, num_val=16, num_test=16, batch_size=16, seed=2)
    model = ClassifierModule(backbone="digits_cnn", task=task, num_classes=data.num_classes, in_chans=1)
    assert model.net(torch.zeros(2, 1, 64, 64)).shape == (2, outputs)
    explained = model.explained_net(torch.zeros(2, 1, 64, 64))
    assert explained.shape == (2, targets)
    before = [p.detach().clone() for p in model.net.parameters()]
    trainer = L.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=data)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.net.parameters()))
    assert {f"val/{name}" for name in logged} | {"val/loss"} <= set(trainer.callback_metrics)
    assert all(torch.isfinite(v) for v in trainer.callback_metrics.values())
    batch = next(iter(data.test_dataloader()))
    model.eval()
    with torch.no_grad():
        prediction = model.predict_step(batch, 0)
        explained = model.explained_net(batch["image"])
    assert prediction["prediction"].shape[0] == 16
    if task == "regions":  # the explained outputs are the differentiable expected scores of Eq. 4
        torch.testing.assert_close(prediction["expected"], explained)


def test_data_and_model_must_agree_on_targets(tmp_path):
    data = SyntheticChestDataModule(task="multilabel", num_train=16, num_val=8, num_test=8, batch_size=8)
    model = ClassifierModule(backbone="digits_cnn", task="multilabel", num_classes=3, in_chans=1)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    with pytest.raises(ConfigurationError, match="num_classes=3 does not match"):
        trainer.fit(model, datamodule=data)


def test_defaults_and_the_pooled_grid() -> None:
    """Defaults (docs/protocols.md, "Tasks"): multiclass with the chapters' batch weighting; DigitsCNN's global pool
    unless ``pooled_size`` asks for a grid, which keeps where a feature is."""
    import inspect

    from lit_xai.models.backbones import DigitsCNN

    params = inspect.signature(ClassifierModule.__init__).parameters
    assert params["task"].default == "multiclass" and params["weighting"].default == "batch"
    assert inspect.signature(DigitsCNN.__init__).parameters["pooled_size"].default == 1
    net = DigitsCNN(num_classes=2, in_chans=1, pooled_size=4).eval()
    assert net.fc.in_features == 64 * 16
    image = torch.zeros(1, 1, 64, 64)
    left, right = image.clone(), image.clone()
    left[..., 20:28, 4:12], right[..., 20:28, 52:60] = 1.0, 1.0
    with torch.no_grad():  # the same blob at two places: a grid pool tells them apart, a global pool nearly not
        grid = (net(left) - net(right)).abs().max()
        net_global = DigitsCNN(num_classes=2, in_chans=1).eval()
        net_global.features = net.features
        pooled = (net_global(left) - net_global(right)).abs().max()
    assert float(grid) > 0 and float(pooled) < float(grid)
    with pytest.raises(ValueError, match="pooled_size"):
        DigitsCNN(pooled_size=0)
