"""Process-wide torch settings a test must leave as it found them (read/restore pairs), for tests/conftest.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def _cudnn_flags() -> tuple[bool, bool]:
    return torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic


def _set_cudnn_flags(flags: tuple[bool, bool]) -> None:
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = flags


def _deterministic_algorithms() -> tuple[bool, bool]:
    return torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()


def _set_deterministic_algorithms(flags: tuple[bool, bool]) -> None:
    torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])


#: name → (read, restore) of the process-wide torch settings a test must not change
GLOBAL_SWITCHES: dict[str, tuple[Callable[[], Any], Callable[[Any], None]]] = {
    "num_threads": (torch.get_num_threads, torch.set_num_threads),
    "grad_enabled": (torch.is_grad_enabled, torch.set_grad_enabled),
    "default_dtype": (torch.get_default_dtype, torch.set_default_dtype),
    "deterministic_algorithms": (_deterministic_algorithms, _set_deterministic_algorithms),
    "anomaly_detection": (torch.is_anomaly_enabled, torch.set_anomaly_enabled),
    "cudnn": (_cudnn_flags, _set_cudnn_flags),
    "float32_matmul_precision": (torch.get_float32_matmul_precision, torch.set_float32_matmul_precision),
}


def snapshot_switches() -> dict[str, Any]:
    """The current value of every switch in :data:`GLOBAL_SWITCHES`."""
    return {name: read() for name, (read, _) in GLOBAL_SWITCHES.items()}


def restore_changed(before: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Restore every switch that differs from ``before``; returns ``{name: (before, found)}`` of those."""
    changed = {}
    for name, (read, restore) in GLOBAL_SWITCHES.items():
        found = read()
        if found != before[name]:
            changed[name] = (before[name], found)
            restore(before[name])
    return changed
