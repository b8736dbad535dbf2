"""Backbones by name: built-ins, ``timm/<name>`` and ``torchvision/<name>``.

Built-ins:
- ``resnet8``: the CIFAR ResNet-8 of the ROAR experiments (seeds 000/001): 3×3 conv 64 + BN + ReLU stem,
  three BasicBlocks of 64/128/256 channels with strides 1/2/2, global average pool, linear 256→classes.
- ``cnn6``: seed 004's CIFAR CNN, six 3×3 convs (64-64-128-128-256-256, ReLU, 2×2 max-pool after every
  second conv) and three linear layers (→512→256→classes).
- ``digits_cnn``: a small 3-conv net for the embedded digits default.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers with a (projected) identity shortcut; one ReLU module used twice."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet8(nn.Module):
    """CIFAR ResNet-8 (reference.md §4, ROAR)."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3, widths: tuple[int, int, int] = (64, 128, 256)) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True)
        )
        blocks, in_channels = [], 64
        for width, stride in zip(widths, (1, 2, 2)):
            blocks.append(BasicBlock(in_channels, width, stride))
            in_channels = width
        self.layer1, self.layer2, self.layer3 = blocks
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


class CNN6(nn.Module):
    """Seed 004's ROAR network: 6 conv + 3 linear layers."""

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        channels: tuple[int, ...] = (64, 64, 128, 128, 256, 256),
        hidden: tuple[int, int] = (512, 256),
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_c = in_chans
        for i, c in enumerate(channels):
            layers += [nn.Conv2d(in_c, c, 3, padding=1), nn.ReLU(inplace=True)]
            if i % 2 == 1:
                layers.append(nn.MaxPool2d(2))
            in_c = c
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(in_c, hidden[0]), nn.ReLU(inplace=True),
            nn.Linear(hidden[0], hidden[1]), nn.ReLU(inplace=True),
            nn.Linear(hidden[1], num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class DigitsCNN(nn.Module):
    """A small CNN for the embedded 32×32 digits default: three conv-BN-ReLU stages, pool, linear.

    ``pooled_size`` > 1 average-pools to a ``pooled_size²`` grid before the linear layer, so the output can depend on
    *where* a feature is (the six-region chest task needs it; a global pool keeps only what is present).
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 1, width: int = 16, pooled_size: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1), nn.BatchNorm2d(4 * width), nn.ReLU(inplace=True),
        )
        if pooled_size < 1:
            raise ValueError(f"pooled_size must be ≥ 1, got {pooled_size}")
        self.pool = nn.AdaptiveAvgPool2d(pooled_size)
        self.fc = nn.Linear(4 * width * pooled_size**2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


BUILTINS: dict[str, Callable[..., nn.Module]] = {"resnet8": ResNet8, "cnn6": CNN6, "digits_cnn": DigitsCNN}


class BackboneError(ValueError):
    """An unknown backbone name or unusable weights."""


def _unknown(name: str, candidates: list[str], family: str) -> BackboneError:
    close = difflib.get_close_matches(name, candidates, n=5)
    hint = f" Close matches: {', '.join(close)}." if close else ""
    return BackboneError(f"unknown {family} backbone {name!r}.{hint}")


def _timm(name: str, num_classes: int, in_chans: int, pretrained: bool, **kwargs: Any) -> nn.Module:
    import timm

    if name not in timm.list_models():
        raise _unknown(name, timm.list_models(), "timm")
    return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans, **kwargs)


def _torchvision(name: str, num_classes: int, in_chans: int, pretrained: bool, **kwargs: Any) -> nn.Module:
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        raise _unknown(name, names, "torchvision")
    if in_chans != 3:
        raise BackboneError(f"torchvision/{name} takes 3 input channels, got in_chans={in_chans}")
    weights = "DEFAULT" if pretrained else None
    if pretrained:
        model = torchvision.models.get_model(name, weights=weights, **kwargs)
        _replace_head(model, num_classes)
        return model
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)


def _replace_head(model: nn.Module, num_classes: int) -> None:
    """Swap the last ``nn.Linear`` for one with ``num_classes`` outputs (pretrained torchvision nets)."""
    parent_name, child_name, last = "", "", None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            parent_name, _, child_name = name.rpartition(".")
            last = module
    if last is None or last.out_features == num_classes:
        return
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child_name, nn.Linear(last.in_features, num_classes))


def available_builtins() -> list[str]:
    return sorted(BUILTINS)


def build_backbone(
    name: str,
    num_classes: int = 10,
    in_chans: int = 3,
    pretrained: bool = False,
    weights: str | Path | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a classifier by name: ``resnet8``, ``cnn6``, ``digits_cnn``, ``timm/<name>``, ``torchvision/<name>``.

    ``weights`` is a local file (a plain ``state_dict`` or a Lightning checkpoint whose keys start with
    ``net.``) loaded strictly after construction. Further keyword arguments go to the constructor (e.g. ``widths``
    of ``resnet8``, ``channels`` of ``cnn6``, ``drop_rate`` of a timm model).
    """
    family, _, model_name = name.partition("/")
    if model_name and family == "timm":
        model = _timm(model_name, num_classes, in_chans, pretrained, **kwargs)
    elif model_name and family == "torchvision":
        model = _torchvision(model_name, num_classes, in_chans, pretrained, **kwargs)
    elif name in BUILTINS:
        if pretrained:
            raise BackboneError(f"built-in backbone {name!r} has no pretrained weights; pass weights=<file> instead")
        try:
            model = BUILTINS[name](num_classes=num_classes, in_chans=in_chans, **kwargs)
        except TypeError as err:
            raise BackboneError(f"backbone {name!r}: {err}") from None
    else:
        close = difflib.get_close_matches(name, available_builtins(), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise BackboneError(
            f"unknown backbone {name!r}.{hint} Use one of {', '.join(available_builtins())}, "
            "'timm/<model>' (e.g. timm/resnet18) or 'torchvision/<model>' (e.g. torchvision/vgg16)"
        )
    if weights is not None:
        load_weights(model, weights)
    return model


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a local ``state_dict`` file or Lightning checkpoint into ``model`` (strict)."""
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"weights file not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if any(k.startswith("net.") for k in state):
        state = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise BackboneError(f"weights in {path} do not fit the backbone: {str(err).splitlines()[0]}") from None
