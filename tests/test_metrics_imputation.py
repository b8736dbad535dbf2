"""ROAD's imputation solved directly (one banded Cholesky, lit_xai.metrics.imputation) equals SciPy's sparse direct
solve of the system Quantus builds, and the conjugate-gradient solve to its tolerance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lit_xai.metrics.faithfulness import ROAD_STENCIL, linear_imputation
from lit_xai.metrics.imputation import BANDED_MAX_SIDE, banded_imputation


def _sparse_reference(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """The system assembled pixel by pixel and solved by ``scipy.sparse.linalg.spsolve`` (Quantus 0.6's
    ``noisy_linear_imputation`` solver), one channel."""
    sparse = pytest.importorskip("scipy.sparse")
    linalg = pytest.importorskip("scipy.sparse.linalg")
    height, width = image.shape
    unknown = np.flatnonzero(removed.ravel())
    position = {int(p): k for k, p in enumerate(unknown)}
    rows, cols, values, rhs = [], [], [], np.zeros(len(unknown))
    for k, p in enumerate(unknown):
        i, j = divmod(int(p), width)
        degree = 0.0
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                weight = ROAD_STENCIL[di + 1][dj + 1]
                if weight and 0 <= i + di < height and 0 <= j + dj < width:
                    degree += weight
                    q = (i + di) * width + j + dj
                    if q in position:
                        rows.append(k), cols.append(position[q]), values.append(-weight)
                    else:
                        rhs[k] += weight * image.ravel()[q]
        rows.append(k), cols.append(k), values.append(degree)
    matrix = sparse.csc_matrix((values, (rows, cols)), shape=(len(unknown), len(unknown)))
    out = image.astype(np.float64).copy().ravel()
    out[unknown] = linalg.spsolve(matrix, rhs)
    return out.reshape(height, width)


@pytest.mark.parametrize("shape", [(3, 2, 9, 9), (2, 1, 7, 12), (2, 3, 11, 6)])  # square, wide (transposed), tall
def test_banded_solve_equals_scipy_sparse_direct_solve(shape: tuple[int, ...]) -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(shape, generator=generator, dtype=torch.float64)
    removed = torch.rand(shape[0], 1, *shape[2:], generator=generator) < torch.linspace(0.2, 0.95, shape[0]).view(
        -1, 1, 1, 1)
    ours = banded_imputation(images, removed, ROAD_STENCIL)
    for n in range(shape[0]):
        for c in range(shape[1]):
            reference = _sparse_reference(images[n, c].numpy(), removed[n, 0].numpy())
            np.testing.assert_allclose(ours[n, c].numpy(), reference, rtol=0, atol=1e-10)
    assert torch.equal(ours[~removed.expand_as(images)], images[~removed.expand_as(images)])  # known pixels kept


def test_auto_is_banded_on_small_cpu_images_and_agrees_with_conjugate_gradients() -> None:
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(4, 3, 16, 16, generator=generator)
    removed = torch.rand(4, 1, 16, 16, generator=generator) < 0.6
    banded = linear_imputation(images, removed, solver="banded")
    assert torch.equal(linear_imputation(images, removed), banded)  # auto on a 16² CPU image
    assert 16 <= BANDED_MAX_SIDE
    cg = linear_imputation(images, removed, solver="cg")
    assert banded.dtype == images.dtype == cg.dtype
    torch.testing.assert_close(banded, cg, rtol=0, atol=1e-6)  # CG stops at a relative residual of 1e-10
    with pytest.raises(ValueError, match="solver"):
        linear_imputation(images, removed, solver="lu")


def test_an_image_with_every_pixel_removed_becomes_zero_as_with_conjugate_gradients() -> None:
    images = torch.rand(2, 1, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    removed = torch.zeros(2, 1, 5, 5, dtype=torch.bool)
    removed[0] = True
    removed[1, 0, 2, 2] = True
    banded = banded_imputation(images, removed, ROAD_STENCIL)
    assert torch.equal(banded[0], torch.zeros_like(banded[0]))
    torch.testing.assert_close(banded, linear_imputation(images, removed, solver="cg"), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"removed \[N, 1, H, W\]"):
        banded_imputation(images, removed[:, :, :4], ROAD_STENCIL)
