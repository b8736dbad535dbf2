"""Which output the evaluation callback explains, per task (issue 17, docs/tasks.md "Target semantics").

The explained network is ``pl_module.explained_net`` when the module has one (:class:`~lit_xai.models.ClassifierModule`:
the label logits, the regression score, the six expected region scores), else ``pl_module.net``, else the module.
A target is one column of its outputs per image, chosen by ``target``:

- ``label``: ``multiclass`` → the image's class; ``multilabel`` → its first positive label (images without a positive
  label are not evaluated); ``regression`` and ``regions`` have no label index (an error: use ``prediction`` or
  ``index``).
- ``prediction``: the highest output — the predicted class, the highest-probability label, the regression score
  (its only output), the region with the highest expected score.
- ``index``: the column ``target_index`` for every image (a label, region or 0 for the score); an index outside the
  outputs is an error.

Per task the recorded value of the explained output (the table's confidence column): the softmax probability
(``multiclass``), the sigmoid probability (``multilabel``), the output as is (``regression``, ``regions``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lit_xai.metrics.outputs import target_output

TARGETS = ("label", "prediction", "index")
#: the recorded output of the explained column per task (lit_xai.metrics.outputs)
TASK_OUTPUTS = {"multiclass": "probability", "multilabel": "sigmoid", "regression": "identity", "regions": "identity"}


def explained_model(pl_module: nn.Module) -> nn.Module:
    """``explained_net`` when the module has one, else ``net``, else the module itself."""
    for attribute in ("explained_net", "net"):
        model = getattr(pl_module, attribute, None)
        if isinstance(model, nn.Module):
            return model
    return pl_module


def task_name(pl_module: nn.Module) -> str:
    """The module's task (``multiclass`` where it declares none)."""
    return str(getattr(getattr(pl_module, "task", None), "name", "multiclass"))


def check_target(task: str, target: str, target_index: int | None) -> None:
    """A ``ValueError`` for a target that makes no sense for ``task`` (module doc)."""
    if target not in TARGETS:
        raise ValueError(f"target={target!r}: expected one of {TARGETS}")
    if target == "label" and task in ("regression", "regions"):
        raise ValueError(
            f"target='label' makes no sense for the {task} task (its labels are scores, not output indices): use "
            "target='prediction' or target='index' with target_index (0 for the regression score, 0-5 for a region)"
        )
    if (target == "index") != (target_index is not None):
        raise ValueError(f"target_index={target_index} goes with target='index' (and only with it); target={target!r}")
    if target_index is not None and target_index < 0:
        raise ValueError(f"target_index must be ≥ 0, got {target_index}")


def choose_targets(task: str, target: str, target_index: int | None, labels: Tensor,
                   outputs: Tensor | None) -> tuple[Tensor, Tensor]:
    """The explained column per image ``[B]`` and which images are evaluated ``[B]`` (bool). ``outputs`` (the
    explained network's outputs) is needed except for ``label`` on ``multiclass``/``multilabel``."""
    if target == "label" and task == "multiclass":
        return labels.long(), torch.ones(len(labels), dtype=torch.bool, device=labels.device)
    if target == "label" and task == "multilabel":
        positive = labels > 0
        return positive.float().argmax(1), positive.any(1)  # argmax returns the first maximal index
    assert outputs is not None, "outputs are needed for this target"
    keep = torch.ones(outputs.shape[0], dtype=torch.bool, device=outputs.device)
    if target == "prediction":
        return outputs.argmax(1), keep
    if target == "label":
        raise ValueError(f"target='label' makes no sense for the {task} task; see check_target")
    assert target_index is not None
    if target_index >= outputs.shape[1]:
        raise ValueError(
            f"target_index={target_index} but the explained network has {outputs.shape[1]} outputs ({task} task)"
        )
    return torch.full_like(keep, target_index, dtype=torch.long), keep


def targeted_ground_truth(value: Tensor | None, target: Tensor, kind: str) -> Tensor | None:
    """Ground truth per output (``masks`` ``[B, K, H, W]`` with K > 1, ``boxes`` ``[B, K, 4]``) → the explained
    target's (``[B, 1, H, W]``, ``[B, 4]``); other shapes unchanged."""
    if value is None:
        return None
    rows = torch.arange(len(target), device=value.device)
    if kind == "boxes" and value.dim() == 3:
        return value[rows, target.to(value.device)]
    if kind == "masks" and value.dim() == 4 and value.shape[1] > 1:
        return value[rows, target.to(value.device)][:, None]
    return value


def recorded(task: str, outputs: Tensor, target: Tensor) -> Tensor:
    """The explained output's value per image (module doc)."""
    return target_output(outputs, target, TASK_OUTPUTS.get(task, "probability"))

