"""Row-wise order statistics shared by the methods that threshold scores per sample (pathway sparsity κ, DGA's
WC/EPC masks, RectGrad's percentile)."""

from __future__ import annotations

from torch import Tensor


def kth_smallest(values: Tensor, k: int) -> Tensor:
    """Row-wise ``k``-th smallest (1-based) of ``values`` ``[B, N]``, as ``kthvalue`` but by ``topk`` on the shorter
    side (the ``N − k + 1`` largest when κ > ½): ~1.7× faster than ``kthvalue`` on CPU at ResNet-8 sizes."""
    count = values.shape[1]
    if not 1 <= k <= count:
        raise ValueError(f"k must lie in [1, {count}], got {k}")
    if k <= count - k + 1:
        return values.topk(k, dim=1, largest=False, sorted=False).values.amax(1)
    return values.topk(count - k + 1, dim=1, largest=True, sorted=False).values.amin(1)
