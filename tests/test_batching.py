"""The rows-per-forward rule of the batched methods: a forward-activation budget, measured once per model/shape."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lit_xai.attribution import AttributionError
from lit_xai.attribution.batching import (
    ACCELERATOR_BUDGET_BYTES,
    BATCH_FLOOR_BUDGETS,
    CPU_BUDGET_BYTES,
    MIN_FLOOR_ROWS,
    activation_bytes_per_row,
    check_max_batch,
    default_budget,
    rows_per_chunk,
)
from lit_xai.models.backbones import build_backbone


def conv_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 2)).eval()


def test_bytes_per_row_counts_the_activations_of_one_row() -> None:
    model = conv_net()
    small = activation_bytes_per_row(model, torch.randn(5, 3, 16, 16))
    large = activation_bytes_per_row(model, torch.randn(1, 3, 32, 32))
    conv_and_relu = 2 * 8 * 16 * 16 * 4  # the two full-resolution float32 feature maps dominate
    assert conv_and_relu <= small < 1.5 * conv_and_relu  # one row, not five
    assert 3.5 < large / small < 4.5  # ~proportional to the pixels


def test_rows_follow_the_budget_and_an_explicit_max_batch_wins() -> None:
    model, x = conv_net(), torch.randn(4, 3, 16, 16)
    per_row = activation_bytes_per_row(model, x)
    assert rows_per_chunk(model, x, budget_bytes=10 * per_row) == 10
    assert rows_per_chunk(model, x[:1], budget_bytes=per_row // 5) == 1  # never zero rows (4 budgets < 1 row)
    assert rows_per_chunk(model, x, max_batch=7, budget_bytes=10 * per_row) == 7
    assert rows_per_chunk(model, x) == CPU_BUDGET_BYTES // per_row
    assert default_budget(torch.device("cpu")) == CPU_BUDGET_BYTES
    assert default_budget(torch.device("meta")) == ACCELERATOR_BUDGET_BYTES
    with pytest.raises(AttributionError, match="budget_bytes"):
        rows_per_chunk(model, x, budget_bytes=0)


def test_a_chunk_holds_the_whole_batch_within_the_floor_budgets() -> None:
    """Never fewer rows than the batch has images (one perturbation of the whole batch) while those stay within
    ``BATCH_FLOOR_BUDGETS`` budgets; beyond that, as many rows as fit there (the memory bound); the pinned factor 4
    is docs/performance.md's measured choice ("Chunk size")."""
    assert BATCH_FLOOR_BUDGETS == 4
    model, x = conv_net(), torch.randn(16, 3, 16, 16)
    per_row = activation_bytes_per_row(model, x)
    assert rows_per_chunk(model, x[:3], budget_bytes=2 * per_row) == 3  # the batch, above the budget's 2 rows
    assert rows_per_chunk(model, x[:12], budget_bytes=2 * per_row) == 8  # capped at 4 budgets = 8 rows
    assert rows_per_chunk(model, x, budget_bytes=5 * per_row) == 16  # 16 ≤ 20: the whole batch
    assert rows_per_chunk(model, x, budget_bytes=30 * per_row) == 30  # the budget's rows when larger


def test_a_single_image_is_explained_two_rows_at_a_time_when_they_fit() -> None:
    """``MIN_FLOOR_ROWS`` = 2 (one ResNet-18 224² row per forward measured 1.56 of the IG floor, two rows 1.36):
    a one-image batch whose budget holds less than one row still gets 2 rows while 2 fit the floor's budgets."""
    assert MIN_FLOOR_ROWS == 2
    model, x = conv_net(), torch.randn(1, 3, 16, 16)
    per_row = activation_bytes_per_row(model, x)
    assert rows_per_chunk(model, x, budget_bytes=per_row * 2 // 3) == 2  # 4 budgets hold 2 rows
    assert rows_per_chunk(model, x, budget_bytes=per_row // 3) == 1  # 4 budgets hold 1 row
    assert rows_per_chunk(model, x, budget_bytes=5 * per_row) == 5  # the budget's rows when larger


def test_cpu_budget_keeps_the_digits_cnn_chunk_at_its_measured_fastest() -> None:
    """40 MiB: 98 rows of the digits CNN, its fastest measured chunk (197 rows = 80 MiB took page faults and ran
    1.24× on IG, docs/performance.md)."""
    assert CPU_BUDGET_BYTES == 40 * 2**20


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "16"])
def test_bad_max_batch_is_named(bad: object) -> None:
    with pytest.raises(AttributionError, match="max_batch"):
        check_max_batch(bad)  # type: ignore[arg-type]
    assert check_max_batch(None) is None and check_max_batch(16) == 16


@pytest.mark.parametrize(
    ("backbone", "size", "in_chans", "batch", "fastest"),
    [  # the fastest rows per forward measured on this CPU (1 thread, docs/performance.md "Chunk size"), at the batch
        # sizes of the benchmark settings
        ("digits_cnn", 32, 1, 64, (64, 128)),  # 98 rows measured fastest, 197 rows 1.24× (page faults)
        ("resnet8", 32, 3, 32, (8, 32)),
        ("resnet8", 32, 3, 8, (8, 32)),
        ("torchvision/resnet18", 224, 3, 4, (4, 8)),
        ("torchvision/resnet18", 224, 3, 1, (2, 8)),  # MIN_FLOOR_ROWS
        ("torchvision/resnet18", 224, 3, 32, (4, 9)),  # the floor's memory cap: 4 budgets hold 4 rows
    ],
)
def test_default_rows_fall_in_the_measured_fastest_range(backbone: str, size: int, in_chans: int, batch: int,
                                                         fastest: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = build_backbone(backbone, num_classes=10, in_chans=in_chans).eval()
    rows = rows_per_chunk(model, torch.zeros(batch, in_chans, size, size))
    assert fastest[0] <= rows <= fastest[1], rows
