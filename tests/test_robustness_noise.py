"""The robustness metrics' perturbations: row (n, b) is drawn from a generator seeded with image b's seed + n."""

from __future__ import annotations

import pytest
import torch

from lit_xai.metrics.robustness import row_noise


@pytest.mark.parametrize("kind", ["uniform", "gaussian"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rows_equal_one_fresh_generator_per_row(kind: str, dtype: torch.dtype) -> None:
    inputs = torch.zeros(3, 2, 5, 5, dtype=dtype)
    seeds, rows, low, high = [7, 2**63 + 5, 123], torch.tensor([0, 4, 5, 8, 2]), -0.2, 0.3
    expected = []
    for row in rows.tolist():  # the definition, written out: a fresh generator per row
        generator = torch.Generator().manual_seed((seeds[row % 3] + row // 3) % 2**64)
        if kind == "uniform":
            expected.append(torch.rand(2, 5, 5, generator=generator, dtype=dtype) * (high - low) + low)
        else:
            expected.append(torch.randn(2, 5, 5, generator=generator, dtype=dtype) * high + low)
    assert torch.equal(row_noise(inputs, seeds, rows, kind, low, high), torch.stack(expected))
