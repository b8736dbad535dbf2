"""kth_smallest_of_parts: the sample-bracketed network-wide selection equals kthvalue of the concatenation, in every
branch (band, tie block at the lower bracket, at the upper bracket, missed rows, NaN, ±inf, non-contiguous parts),
with the CPU's NumPy steps and with the torch steps that accelerators run (``backend``)."""

from __future__ import annotations

import pytest
import torch

from lit_xai.attribution import order_statistics
from lit_xai.attribution.order_statistics import SAMPLED_BAND_MIN, kth_smallest_of_parts


@pytest.fixture(params=["numpy", "torch"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The NumPy steps (CPU default) or, with no dtype routed to NumPy, the torch steps accelerators run."""
    if request.param == "torch":
        monkeypatch.setattr(order_statistics, "NUMPY_DTYPES", ())
    return request.param


def _reference(parts: list[torch.Tensor], k: int, plain: bool = False) -> torch.Tensor:
    flat = torch.cat([p.flatten(1) for p in parts], 1)
    return order_statistics.kth_smallest(flat, k) if plain else flat.kthvalue(k, dim=1).values


def _assert_exact(parts: list[torch.Tensor], ks: list[int], plain: bool = False, **kwargs: float) -> None:
    """Equal to kthvalue of the concatenation (``plain``: to ``kth_smallest`` of it, which differs from kthvalue
    where NaNs reach its topk side)."""
    for k in ks:
        expected, got = _reference(parts, k, plain), kth_smallest_of_parts(parts, k, **kwargs)
        nan = expected.isnan()
        assert torch.equal(nan, got.isnan()) and torch.equal(expected[~nan], got[~nan]), k


def _scores(seed: int, rows: int = 3) -> list[torch.Tensor]:
    """Three layers of ReLU-like scores (60% exact zeros, a long tail), 70 000 per row: above the band threshold."""
    generator = torch.Generator().manual_seed(seed)
    parts = [torch.rand(rows, 4, 80, 80, generator=generator) ** 3, torch.rand(rows, 30000, generator=generator),
             torch.rand(rows, 3, 60, 80, generator=generator)]
    for part in parts:
        part[part < 0.6] = 0
    return parts


@pytest.mark.parametrize("seed", [0, 1])
def test_equals_kthvalue_of_the_concatenation_in_every_branch(seed: int, backend: str) -> None:
    parts = _scores(seed)
    count = sum(p[0].numel() for p in parts)
    assert count >= SAMPLED_BAND_MIN
    # κ below the zero share: tie block at lo; above it: the band; the ends of the range
    _assert_exact(parts, [1, 2, count // 3, int(0.6 * count), int(0.7 * count), int(0.9 * count), count - 1, count])
    # a zero-width bracket misses most rows: they fall back to the plain selection
    _assert_exact(parts, [int(0.7 * count), int(0.95 * count)], spread=0.0)


def test_ties_infinities_nan_and_layouts(backend: str) -> None:
    generator = torch.Generator().manual_seed(0)
    tied = [torch.randint(0, 40, (3, 40000), generator=generator).float(),
            torch.randint(0, 40, (3, 30000), generator=generator).float()]
    _assert_exact(tied, [1, 1000, 35000, 69999, 70000])
    signed = torch.randn(3, 70000, dtype=torch.float64, generator=generator)
    signed[:, :100], signed[:, 100:200] = -torch.inf, torch.inf
    _assert_exact([signed], [1, 100, 150, 35000, 69850, 69950, 70000])
    nan = torch.rand(2, 70000, generator=generator)
    nan[:, 50000:] = float("nan")
    _assert_exact([nan], [1, 25000, 50000, 50001, 70000], plain=True)
    layouts = [torch.rand(2, 8, 60, 60, generator=generator).to(memory_format=torch.channels_last),
               torch.rand(2, 60, 8, 60, generator=generator).transpose(1, 2)]
    _assert_exact(layouts, [1, 30000, 50000, 57600])
    small = [torch.rand(4, 100, generator=generator), torch.rand(4, 50, generator=generator)]  # plain topk path
    _assert_exact(small, [1, 75, 150])
    with pytest.raises(ValueError, match="k must lie"):
        kth_smallest_of_parts(small, 151)


def test_the_sample_decides_the_speed_not_the_value(monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    """Any seed, sample size or bracket width gives the same value; with the default bracket the band step answers
    every row — no full-row fallback (the fallbacks are counted; the torch steps select in the band by
    ``kth_smallest`` over the padded band only)."""
    parts = _scores(2)
    count = sum(p[0].numel() for p in parts)
    k = int(0.8 * count)
    calls = []
    plain = order_statistics.kth_smallest
    monkeypatch.setattr(order_statistics, "kth_smallest", lambda v, kk: calls.append(v.shape) or plain(v, kk))
    expected = _reference(parts, k)
    assert torch.equal(kth_smallest_of_parts(parts, k), expected)
    assert all(width < count // 5 for _, width in calls), calls
    assert len(calls) == (backend == "torch")
    for seed, sample, spread in ((7, 1024, 2.0), (3, 256, 0.5), (0, 4096, 0.0)):
        assert torch.equal(kth_smallest_of_parts(parts, k, sample=sample, spread=spread, seed=seed), expected)
    assert any(width == count for _, width in calls)  # a zero-width bracket misses: the fallback ran


def test_short_rows_are_sorted_whole_with_kth_smallest_nan_rule(backend: str) -> None:
    """Rows between the two sampling thresholds: NumPy sorts the concatenation whole, the torch steps sample; both
    exact. The sort gives NaN where ``kth_smallest`` does: on its largest side a NaN anywhere in the row (the sampled
    steps answer such a row from its other values, as before)."""
    generator = torch.Generator().manual_seed(3)
    parts = [torch.rand(5, 3, 40, 40, generator=generator), torch.rand(5, 7000, generator=generator)]
    count = 4800 + 7000
    assert order_statistics.SAMPLED_SELECTION_MIN <= count < SAMPLED_BAND_MIN
    _assert_exact(parts, [1, 17, count // 2, count - 3, count])
    if backend == "numpy":
        parts[1][1, 5] = float("nan")
        _assert_exact(parts, [1, count // 3, count // 2 + 1, count - 1, count], plain=True)


def test_parts_in_the_graph_are_read_without_their_gradient(backend: str) -> None:
    """Scores that require grad (e.g. continuous gates) are selected by value; nothing is attached to the result."""
    parts = [p.requires_grad_(True) for p in _scores(4)]
    count = sum(p[0].numel() for p in parts)
    _assert_exact(parts, [int(0.3 * count), int(0.8 * count)])
    assert not kth_smallest_of_parts(parts, int(0.8 * count)).requires_grad
