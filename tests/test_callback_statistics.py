"""AttributionEvaluation fits the IBA family's feature statistics on the training data (Schulz et al. 2020 §3.1):
from ``trainer.datamodule.train_dataloader()``, on the explained model, again only after a weight change; opt-out
and missing-loader behaviour; the model and the global RNG are left as found; under DDP every rank uses the same
statistics, equal to one process's."""

from __future__ import annotations

import warnings
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DDPStrategy

from lit_xai.attribution import build_method
from lit_xai.attribution.information.statistics import (
    FeatureStatistics,
    estimate_feature_statistics,
    welford_over_loader,
)
from lit_xai.callbacks import AttributionEvaluation
from lit_xai.callbacks.attribution_eval import CallbackConfigError, RankImages
from lit_xai.callbacks.explainers import Explainer
from lit_xai.data import SyntheticChestDataModule
from lit_xai.data.synthetic import SyntheticShapesDataModule
from lit_xai.models.classifier import ClassifierModule

LAYER = "features.6"  # the digits CNN's second conv stage (its ReLU; 6 × 6 at 12² input)
#: few optimisation steps and draws: these tests are about the statistics, not the maps
IBA = {"name": "iba", "label": "IBA", "kwargs": {"layer": LAYER, "steps": 2, "noise_draws": 2, "stats_samples": 12}}
MISSING = "no feature statistics"  # the IBA family's warning when it falls back to the explained batch


def _data(batch_size: int = 4) -> SyntheticShapesDataModule:
    return SyntheticShapesDataModule(num_train=16, num_val=4, num_test=4, image_size=12, object_size=(3, 4),
                                     num_distractors=1, batch_size=batch_size)


def _module() -> ClassifierModule:
    torch.manual_seed(0)
    return ClassifierModule(backbone="digits_cnn", num_classes=4, in_chans=3)


def _callback(tmp_path: Path, **kwargs) -> AttributionEvaluation:
    settings = {"methods": [IBA], "metrics": [{"name": "deletion", "kwargs": {"num_steps": 2}}], "max_samples": 4,
                "num_grid_samples": 0, "num_table_samples": 0, "progress_bar": False, "print_summary": False,
                "random_control": False, "output_dir": str(tmp_path / "out")}
    return AttributionEvaluation(**{**settings, **kwargs})


def _trainer(tmp_path: Path, callbacks: list[Callback], **kwargs) -> L.Trainer:
    settings = {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1, "limit_test_batches": 1,
                "num_sanity_val_steps": 0, "inference_mode": False}
    return L.Trainer(callbacks=callbacks, accelerator="cpu", logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                     **{**settings, **kwargs})


def _statistics(callback: AttributionEvaluation, label: str = "IBA") -> dict:
    method = next(e.method for e in callback.explainers if e.label == label)
    return method._fitted


def _missing_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if MISSING in str(w.message)]


def test_test_run_fits_statistics_from_the_train_loader_and_does_not_warn(tmp_path: Path) -> None:
    data, module = _data(), _module()
    callback = _callback(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = _trainer(tmp_path, [callback], inference_mode=True).test(module, data, verbose=False)[0]
    assert "attr/test/IBA/deletion" in results
    assert _missing_warnings(caught) == []
    fitted = _statistics(callback)
    expected = estimate_feature_statistics(module.net, LAYER, data.train_dataloader(), max_samples=12)
    assert set(fitted) == {LAYER} and fitted[LAYER].num_samples == 12
    for field in ("mean", "std", "active"):  # same images in the same order and batches: bit-identical
        assert torch.equal(getattr(fitted[LAYER], field), getattr(expected, field)), field
    assert not fitted[LAYER].mean.is_inference()  # fitted outside Lightning's inference mode: usable with autograd


def test_refits_after_a_weight_change_only(tmp_path: Path) -> None:
    data, module = _data(), _module()
    callback = _callback(tmp_path, stages=["val"])
    method = callback.explainers[0].method
    calls: list[int] = []
    fit = method.fit

    def counted(model: torch.nn.Module, loader: object) -> object:
        calls.append(1)
        return fit(model, loader)

    method.fit = counted
    trainer = _trainer(tmp_path, [callback], max_epochs=2)
    trainer.fit(module, data)
    assert len(calls) == 2  # one validation per epoch, new weights each time
    trainer.validate(module, data, verbose=False)
    assert len(calls) == 2  # the weights of the last validation: nothing to refit
    with torch.no_grad():
        module.net.features[4].weight.mul_(2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.validate(module, data, verbose=False)
    assert len(calls) == 3 and _missing_warnings(caught) == []
    expected = estimate_feature_statistics(module.net, LAYER, data.train_dataloader(), max_samples=12)
    assert torch.equal(_statistics(callback)[LAYER].std, expected.std)  # the new weights' statistics


def test_opt_out_keeps_the_per_batch_estimate_with_its_warning(tmp_path: Path) -> None:
    callback = _callback(tmp_path, fit_statistics=False)
    with pytest.warns(UserWarning, match=MISSING):
        results = _trainer(tmp_path, [callback]).test(_module(), _data(), verbose=False)[0]
    assert "attr/test/IBA/deletion" in results and _statistics(callback) == {}


def test_no_train_loader_is_a_config_error_unless_fitting_is_off(tmp_path: Path) -> None:
    data = _data()
    data.setup("test")
    loader = data.test_dataloader()
    metrics = [{"name": "deletion", "kwargs": {"num_steps": 2, "baseline": "zero"}}]  # no datamodule: no pixel range
    with pytest.raises(CallbackConfigError, match=r"\['IBA'\] need feature statistics.*no datamodule.*fit_statistics"):
        _trainer(tmp_path, [_callback(tmp_path, metrics=metrics)]).test(_module(), dataloaders=loader, verbose=False)
    # a stage the callback does not run in needs no training data
    idle = _callback(tmp_path, metrics=metrics, stages=["val"])
    _trainer(tmp_path, [idle]).test(_module(), dataloaders=loader, verbose=False)
    with pytest.warns(UserWarning, match=MISSING):
        off = _callback(tmp_path, metrics=metrics, fit_statistics=False)
        _trainer(tmp_path, [off]).test(_module(), dataloaders=loader, verbose=False)


def test_given_statistics_are_not_refitted(tmp_path: Path) -> None:
    data, module = _data(), _module()
    given = estimate_feature_statistics(module.net, LAYER, data.train_dataloader(), max_samples=4)
    callback = _callback(tmp_path)
    kwargs = {**IBA["kwargs"], "statistics": given}
    callback.explainers[0] = Explainer("IBA", build_method("iba", **kwargs))  # statistics= can only come from Python
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _trainer(tmp_path, [callback]).test(module, data, verbose=False)
    assert _statistics(callback) == {} and _missing_warnings(caught) == []


def test_fit_leaves_model_modes_grads_and_global_rng_as_found(tmp_path: Path) -> None:
    data, module = _data(), _module()
    callback = _callback(tmp_path)
    module.train()
    module.net.features[1].eval()
    module.net.fc.weight.requires_grad_(False)
    module.net.features[0].weight.grad = torch.ones_like(module.net.features[0].weight)
    modes = [m.training for m in module.modules()]
    flags = [p.requires_grad for p in module.parameters()]
    grads = [None if p.grad is None else p.grad.clone() for p in module.parameters()]
    state = {k: v.clone() for k, v in module.state_dict().items()}
    rng = torch.get_rng_state()
    trainer = SimpleNamespace(strategy=SimpleNamespace(broadcast=lambda obj, src=0: obj), datamodule=data,
                              global_rank=0, world_size=1)
    callback._fit_statistics(trainer, module)  # type: ignore[arg-type]
    assert set(_statistics(callback)) == {LAYER}
    assert [m.training for m in module.modules()] == modes
    assert [p.requires_grad for p in module.parameters()] == flags
    assert all((g is None and p.grad is None) or torch.equal(g, p.grad) for g, p in zip(grads, module.parameters()))
    assert all(torch.equal(v, state[k]) for k, v in module.state_dict().items())  # BatchNorm statistics too
    assert torch.equal(torch.get_rng_state(), rng)


def test_region_model_statistics_serve_every_batch(tmp_path: Path) -> None:
    """The regions task's ``explained_net`` is a fresh ``Sequential(net, head)`` per call; the callback keeps one
    object, so the statistics fitted on it serve every batch (else every batch would warn)."""
    torch.manual_seed(0)
    module = ClassifierModule(backbone="digits_cnn", backbone_kwargs={"pooled_size": 4}, task="regions",
                              num_classes=6, in_chans=1)
    data = SyntheticChestDataModule(task="regions", num_train=8, num_val=4, num_test=8, image_size=32, batch_size=4)
    iba = {**IBA, "kwargs": {**IBA["kwargs"], "layer": "0.features.6", "stats_samples": 8}}
    callback = _callback(tmp_path, methods=[iba], target="prediction", max_samples=8,
                         metrics=[{"name": "deletion", "kwargs": {"num_steps": 2, "output": "identity"}}])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _trainer(tmp_path, [callback], limit_test_batches=2).test(module, data, verbose=False)
    assert _missing_warnings(caught) == [] and set(_statistics(callback)) == {"0.features.6"}


def test_rank_images_split_every_batch_into_disjoint_shares() -> None:
    batches = [{"image": torch.arange(4.0)[:, None]}, {"image": torch.arange(4.0, 7.0)[:, None]}]
    shares = [torch.cat(list(RankImages(batches, rank, 2))).flatten().tolist() for rank in (0, 1)]
    assert shares == [[0.0, 2.0, 4.0, 6.0], [1.0, 3.0, 5.0]]
    assert torch.cat(list(RankImages(batches))).flatten().tolist() == list(range(7))
    with pytest.raises(ValueError, match="rank must be in"):
        RankImages(batches, 2, 2)


def test_two_rank_shares_merge_to_the_one_process_statistics() -> None:
    """The DDP path without processes: each rank's Welford state over its :class:`RankImages` share (half the budget),
    merged as ``all_gather_merge`` does, gives the one-process statistics of the same images."""
    data, module = _data(batch_size=2), _module()
    one = estimate_feature_statistics(module.net, LAYER, data.train_dataloader(), max_samples=12)
    states = [welford_over_loader(module.net, LAYER, RankImages(data.train_dataloader(), r, 2), 6) for r in (0, 1)]
    merged = FeatureStatistics.from_welford(states[0].merge(states[1]), min_std=0.01, active_threshold=0.01)
    assert merged.num_samples == one.num_samples == 12
    torch.testing.assert_close(merged.mean, one.mean, rtol=1e-6, atol=1e-7)  # merge order: float64 rounding only
    torch.testing.assert_close(merged.std, one.std, rtol=1e-6, atol=1e-7)
    assert torch.equal(merged.active, one.active)


class SaveStatistics(Callback):
    """Writes each rank's fitted statistics (a ddp_spawn worker's callbacks are copies)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        evaluation = next(c for c in trainer.callbacks if isinstance(c, AttributionEvaluation))
        torch.save({k: v.state_dict() for k, v in _statistics(evaluation).items()},
                   self.folder / f"rank{trainer.global_rank}-of{trainer.world_size}.pt")


def _ddp_test_run(tmp_path: Path, devices: int) -> dict[str, float]:
    strategy = (DDPStrategy(start_method="spawn", process_group_backend="gloo", timeout=timedelta(seconds=60))
                if devices > 1 else "auto")
    callback = _callback(tmp_path, max_samples=None)
    trainer = _trainer(tmp_path, [callback, SaveStatistics(tmp_path)], devices=devices, strategy=strategy,
                       limit_test_batches=None)
    results = trainer.test(_module(), _data(batch_size=2), verbose=False)[0]
    return {k: float(v) for k, v in results.items() if k.startswith("attr/")}


@pytest.mark.slow
def test_ddp_ranks_use_identical_statistics_equal_to_one_process(tmp_path: Path) -> None:
    single = _ddp_test_run(tmp_path, devices=1)
    distributed = _ddp_test_run(tmp_path, devices=2)
    one = torch.load(tmp_path / "rank0-of1.pt")
    ranks = [torch.load(tmp_path / f"rank{r}-of2.pt") for r in (0, 1)]
    for field in ("mean", "std", "active"):
        assert torch.equal(ranks[0][LAYER][field], ranks[1][LAYER][field]), field  # all_gather merge: identical
    assert ranks[0][LAYER]["num_samples"] == one[LAYER]["num_samples"] == 12
    # the same 12 images (each rank 6 of the loader's batches of 2); the Welford states are merged in another order,
    # so float64 rounding may differ before the float32 cast
    torch.testing.assert_close(ranks[0][LAYER]["mean"], one[LAYER]["mean"], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(ranks[0][LAYER]["std"], one[LAYER]["std"], rtol=1e-6, atol=1e-7)
    assert torch.equal(ranks[0][LAYER]["active"], one[LAYER]["active"])
    assert distributed.keys() == single.keys()
    for key, value in single.items():
        assert distributed[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
