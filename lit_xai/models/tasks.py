"""Prediction tasks of the classifier module: loss, metrics, predictions and the explained outputs, one class each.

- ``multiclass``: softmax cross-entropy, top-1/top-5 accuracy (the single-label default).
- ``multilabel``: sigmoid outputs with the weighted BCE of seed 002 (ch. "Towards Semantic Interpretation…", Eq. 1):
  L = −Σ_c [β y_c log ŷ_c + (1 − y_c) log(1 − ŷ_c)], β = #negative / #positive labels in the batch; per-label AUROC and
  F1 (torchmetrics).
- ``regression``: one output, the weighted MSE of Eq. 2, L = 1/N Σ_n β_n (f(x_n) − y_n)²; MAE and R².
- ``regions``: six regions × four severity classes (BrixIA), L = SCCE (Eq. 3) + MAE^d (Eq. 4), MAE^d = 1/C Σ_r
  |y_r − Σ_c softmax(ŷ_r)_c · c|; per-region accuracy and MAE of the expected scores.

Every task says which outputs an attribution target indexes (:meth:`Task.explained`): class logits (multiclass), label
logits (multilabel: one sigmoid output, explained by its logit as the chapters do), the score (regression), the six
expected region scores (regions).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, Metric, R2Score
from torchmetrics.classification import MulticlassAccuracy, MultilabelAUROC, MultilabelF1Score

#: BrixIA's per-region severity classes 0..3 (seed 002, "2) In BrixIA dataset … a severity score ∈ {0, 1, 2, 3}")
SEVERITY_CLASSES = 4
WEIGHTINGS = ("batch", "none")


def expected_scores(logits: Tensor) -> Tensor:
    """``[B, R, K]`` region logits → ``[B, R]`` expected scores Σ_c softmax(ŷ_r)_c · c (the differentiable score of
    Eq. 4)."""
    values = torch.arange(logits.shape[-1], dtype=logits.dtype, device=logits.device)
    return logits.softmax(-1) @ values


class ExpectedRegionScores(nn.Module):
    """``[B, R·K]`` logits → ``[B, R]`` :func:`expected_scores` (the head whose outputs region targets index)."""

    def __init__(self, regions: int, classes: int = SEVERITY_CLASSES) -> None:
        super().__init__()
        self.regions, self.classes = regions, classes

    def forward(self, logits: Tensor) -> Tensor:
        return expected_scores(region_logits(logits, self.regions, self.classes))


def region_logits(logits: Tensor, regions: int, classes: int = SEVERITY_CLASSES) -> Tensor:
    """``[B, R·K]`` → ``[B, R, K]``; a clear error when the output size does not fit."""
    if logits.dim() != 2 or logits.shape[1] != regions * classes:
        raise ValueError(f"regions task: expected outputs [B, {regions}·{classes}], got {tuple(logits.shape)}")
    return logits.view(len(logits), regions, classes)


class Task:
    """One prediction task: outputs per target, loss, metrics, predictions, the explained outputs."""

    name: ClassVar[str]
    #: the validation metric a checkpoint callback should monitor, and its direction
    monitor: ClassVar[tuple[str, str]]

    def __init__(self, num_classes: int, weighting: str = "batch") -> None:
        if num_classes < 1:
            raise ValueError(f"{self.name}: num_classes must be ≥ 1, got {num_classes}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"{self.name}: unknown weighting {weighting!r}; expected one of {list(WEIGHTINGS)}")
        self.num_classes, self.weighting = num_classes, weighting

    @property
    def num_outputs(self) -> int:
        """Width of the backbone's last layer."""
        return self.num_classes

    def loss(self, outputs: Tensor, labels: Tensor) -> Tensor:
        raise NotImplementedError

    def metrics(self) -> dict[str, Metric]:
        """Fresh metrics, keyed by the name they are logged under (``<stage>/<name>``)."""
        raise NotImplementedError

    def update(self, metrics: dict[str, Metric], outputs: Tensor, labels: Tensor) -> None:
        """Update every metric of :meth:`metrics` with one batch."""
        for metric in metrics.values():
            metric.update(outputs, labels)

    def predict(self, outputs: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def explained(self) -> nn.Module | None:
        """A head after the backbone whose outputs attribution targets index, or ``None`` for the raw outputs."""
        return None


class MulticlassTask(Task):
    name = "multiclass"
    monitor = ("acc", "max")

    def loss(self, outputs: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(outputs, labels)

    def metrics(self) -> dict[str, Metric]:
        top_k = min(5, self.num_classes)
        return {
            name: MulticlassAccuracy(num_classes=self.num_classes, top_k=k, average="micro")
            for name, k in (("acc", 1), ("top5", top_k))
        }

    def predict(self, outputs: Tensor) -> dict[str, Tensor]:
        return {"prediction": outputs.argmax(1), "probabilities": outputs.softmax(1)}


def positive_weight(labels: Tensor) -> Tensor:
    """β of Eq. 1: the number of negative labels over the number of positive labels in the batch (1 without
    positives, where the positive term is empty anyway)."""
    positives = labels.sum()
    return torch.where(positives > 0, (labels.numel() - positives) / positives.clamp(min=1), torch.ones_like(positives))


class MultilabelTask(Task):
    name = "multilabel"
    monitor = ("auroc", "max")

    def loss(self, outputs: Tensor, labels: Tensor) -> Tensor:
        labels = labels.to(outputs.dtype)
        beta = positive_weight(labels) if self.weighting == "batch" else torch.ones((), device=outputs.device)
        per_entry = F.binary_cross_entropy_with_logits(outputs, labels, pos_weight=beta, reduction="none")
        return per_entry.sum(1).mean()  # Σ_c (Eq. 1), averaged over the batch

    def metrics(self) -> dict[str, Metric]:
        n = self.num_classes
        return {"auroc": MultilabelAUROC(num_labels=n, average="macro"), "f1": MultilabelF1Score(num_labels=n)}

    def update(self, metrics: dict[str, Metric], outputs: Tensor, labels: Tensor) -> None:
        super().update(metrics, outputs.sigmoid(), labels.long())

    def predict(self, outputs: Tensor) -> dict[str, Tensor]:
        probabilities = outputs.sigmoid()
        return {"prediction": (probabilities > 0.5).long(), "probabilities": probabilities}


def value_weights(targets: Tensor) -> Tensor:
    """β_n of Eq. 2, our reading (the chapter names a weighted MSE without defining β): each target value's weight is
    inversely proportional to its count in the batch, normalised to mean 1 — the batch-wise balancing of Eq. 1 carried
    to integer scores."""
    _, inverse, counts = targets.unique(return_inverse=True, return_counts=True)
    weights = 1.0 / counts[inverse].to(torch.float32)
    return weights * (len(targets) / weights.sum())


class RegressionTask(Task):
    name = "regression"
    monitor = ("mae", "min")

    def __init__(self, num_classes: int = 1, weighting: str = "batch") -> None:
        super().__init__(num_classes, weighting)
        if num_classes != 1:
            raise ValueError(f"regression: one output (the global score), got num_classes={num_classes}")

    def loss(self, outputs: Tensor, labels: Tensor) -> Tensor:
        prediction, target = outputs[:, 0], labels.to(outputs.dtype)
        weights = value_weights(target).to(outputs.dtype) if self.weighting == "batch" else torch.ones_like(target)
        return (weights * (prediction - target).square()).mean()

    def metrics(self) -> dict[str, Metric]:
        return {"mae": MeanAbsoluteError(), "r2": R2Score()}

    def update(self, metrics: dict[str, Metric], outputs: Tensor, labels: Tensor) -> None:
        super().update(metrics, outputs[:, 0], labels.to(outputs.dtype))

    def predict(self, outputs: Tensor) -> dict[str, Tensor]:
        return {"prediction": outputs[:, 0]}


class RegionsTask(Task):
    name = "regions"
    monitor = ("mae", "min")

    @property
    def num_outputs(self) -> int:
        return self.num_classes * SEVERITY_CLASSES

    def loss(self, outputs: Tensor, labels: Tensor) -> Tensor:
        logits = region_logits(outputs, self.num_classes)
        scce = F.cross_entropy(logits.flatten(0, 1), labels.flatten())  # Eq. 3, averaged over regions and images
        # Eq. 4: 1/C Σ_r |y_r − E_r|, averaged over the batch
        mae_d = (labels.to(logits.dtype) - expected_scores(logits)).abs().mean()
        return scce + mae_d

    def metrics(self) -> dict[str, Metric]:
        return {"acc": MulticlassAccuracy(num_classes=SEVERITY_CLASSES, average="micro"), "mae": MeanAbsoluteError()}

    def update(self, metrics: dict[str, Metric], outputs: Tensor, labels: Tensor) -> None:
        logits = region_logits(outputs, self.num_classes)
        metrics["acc"].update(logits.flatten(0, 1), labels.flatten())
        metrics["mae"].update(expected_scores(logits), labels.to(outputs.dtype))

    def predict(self, outputs: Tensor) -> dict[str, Tensor]:
        logits = region_logits(outputs, self.num_classes)
        return {"prediction": logits.argmax(-1), "expected": expected_scores(logits)}

    def explained(self) -> nn.Module:
        return ExpectedRegionScores(self.num_classes)


TASKS: dict[str, type[Task]] = {t.name: t for t in (MulticlassTask, MultilabelTask, RegressionTask, RegionsTask)}


def build_task(name: str, num_classes: int, weighting: str = "batch") -> Task:
    """The task ``name`` for ``num_classes`` targets; an unknown name lists the tasks."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {sorted(TASKS)}")
    return TASKS[name](num_classes, weighting)
