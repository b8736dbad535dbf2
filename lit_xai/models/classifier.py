"""ClassifierModule: any backbone by name, trained and evaluated for one task (:mod:`lit_xai.models.tasks`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor, nn

from lit_xai.models.backbones import build_backbone
from lit_xai.models.tasks import TASKS, build_task


class ConfigurationError(ValueError):
    """A configuration that cannot work (reported as one line by the CLI)."""


class ClassifierModule(L.LightningModule):
    """Image model around ``build_backbone(backbone)``; the network is ``self.net``.

    Args:
        backbone: ``resnet8``, ``cnn6``, ``digits_cnn``, ``timm/<name>`` or ``torchvision/<name>``.
        num_classes: number of targets (classes, labels, 1 score, regions); must match the DataModule's.
        task: ``multiclass`` (softmax CE), ``multilabel`` (weighted BCE, seed 002 Eq. 1), ``regression`` (weighted MSE,
            Eq. 2) or ``regions`` (SCCE + MAE^d over six regions × four scores, Eq. 3-4); :mod:`lit_xai.models.tasks`.
        weighting: ``batch`` (the chapters' batch-wise β of Eq. 1/2) or ``none`` (the unweighted losses they compare).
        in_chans: input channels; must match the DataModule's.
        pretrained: timm/torchvision pretrained weights (needs them in the local cache; nothing is downloaded here).
        weights: a local ``state_dict`` file or Lightning checkpoint to initialise the backbone from.
        backbone_kwargs: further constructor arguments of the backbone (e.g. ``{channels: [...]}`` for ``cnn6``).
        optimizer: ``adam``, ``adamw`` or ``sgd``; ``lr``, ``weight_decay``, ``momentum`` (SGD) configure it.
        scheduler: ``none``, ``step`` (StepLR: ``step_size``, ``gamma``) or ``cosine`` (over ``max_epochs``).
    """

    def __init__(
        self,
        backbone: str = "digits_cnn",
        num_classes: int = 10,
        in_chans: int = 1,
        task: Literal["multiclass", "multilabel", "regression", "regions"] = "multiclass",
        weighting: Literal["batch", "none"] = "batch",
        pretrained: bool = False,
        weights: str | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        optimizer: Literal["adam", "adamw", "sgd"] = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        scheduler: Literal["none", "step", "cosine"] = "none",
        step_size: int = 10,
        gamma: float = 0.5,
        max_epochs: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if task not in TASKS:
            raise ConfigurationError(f"unknown task {task!r}; use one of {', '.join(sorted(TASKS))}")
        try:
            self.task = build_task(task, num_classes, weighting)
        except ValueError as error:
            raise ConfigurationError(str(error)) from None
        self.net = build_backbone(
            backbone, num_classes=self.task.num_outputs, in_chans=in_chans, pretrained=pretrained,
            weights=Path(weights) if weights else None, **(backbone_kwargs or {}),
        )
        per_stage = {stage: self.task.metrics() for stage in ("train", "val", "test")}
        self.metric_names = tuple(per_stage["train"])
        self.metrics = nn.ModuleDict(
            {f"{stage}_{name}": metric for stage, metrics in per_stage.items() for name, metric in metrics.items()}
        )

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)

    @property
    def explained_net(self) -> nn.Module:
        """The network whose outputs attribution targets index: ``net``, or ``net`` followed by the task's head (the
        six expected region scores of the ``regions`` task)."""
        head = self.task.explained()
        return self.net if head is None else nn.Sequential(self.net, head.to(self.device))

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is None:
            return
        for attr in ("num_classes", "in_chans"):
            expected = getattr(datamodule, attr, None)
            if expected is not None and expected != self.hparams[attr]:
                raise ConfigurationError(
                    f"model.{attr}={self.hparams[attr]} does not match the data's {attr}={expected} "
                    f"({type(datamodule).__name__}); set --model.{attr} {expected}"
                )

    def _step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        images, labels = batch["image"], batch["label"]
        outputs = self(images)
        loss = self.task.loss(outputs, labels)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, sync_dist=True, batch_size=len(labels))
        metrics = {name: self.metrics[f"{stage}_{name}"] for name in self.metric_names}
        self.task.update(metrics, outputs.detach(), labels)
        for name, metric in metrics.items():
            self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True, batch_size=len(labels))
        return loss

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "test")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return {"index": batch["index"], **self.task.predict(self(batch["image"]))}

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        params = self.net.parameters()
        if hp.optimizer == "adam":
            optimizer = torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay)
        elif hp.optimizer == "adamw":
            optimizer = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        elif hp.optimizer == "sgd":
            optimizer = torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        else:
            raise ConfigurationError(f"unknown optimizer {hp.optimizer!r}; use adam, adamw or sgd")
        if hp.scheduler == "none":
            return optimizer
        if hp.scheduler == "step":
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=hp.step_size, gamma=hp.gamma)
        elif hp.scheduler == "cosine":
            epochs = hp.max_epochs or (self.trainer.max_epochs if self._trainer is not None else None)
            if not epochs or epochs < 0:
                raise ConfigurationError("scheduler=cosine needs model.max_epochs or trainer.max_epochs")
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
        else:
            raise ConfigurationError(f"unknown scheduler {hp.scheduler!r}; use none, step or cosine")
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
