"""Suite-wide settings: W&B offline and quiet, whatever the caller's environment; one thread; and every test starts
from the same global random state and must leave torch's global switches as it found them (issue 19 item 15: a test
passed alone and failed in the full run because its unseeded inputs depended on the tests before it)."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch

os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.pop("LIT_XAI_WANDB_MODE", None)

#: float results (reduction order) depend on the thread count; one thread for every test, whichever files are run
torch.set_num_threads(1)
#: the seed every test's global generators start from
TEST_SEED = 0


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


@pytest.fixture(autouse=True)
def isolated_global_state() -> Iterator[None]:
    """Seed Python's, NumPy's and torch's global generators with ``TEST_SEED`` (an unseeded draw gives the same
    values whatever ran before) and fail a test that leaves a global torch switch changed (restoring it first)."""
    random.seed(TEST_SEED)
    np.random.seed(TEST_SEED)
    torch.manual_seed(TEST_SEED)
    before = {name: read() for name, (read, _) in GLOBAL_SWITCHES.items()}
    yield
    leaked = {}
    for name, (read, restore) in GLOBAL_SWITCHES.items():
        now = read()
        if now != before[name]:
            leaked[name] = (before[name], now)
            restore(before[name])
    assert not leaked, f"the test changed global torch settings (before, after), now restored: {leaked}"
