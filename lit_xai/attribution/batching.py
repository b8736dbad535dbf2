"""How many rows a batched method evaluates per forward pass: sized by an activation-memory budget, not a fixed count.

Methods that evaluate many perturbed copies of a batch (Integrated Gradients' steps, SmoothGrad's samples,
Occlusion's patches, sampling methods) split the rows into chunks. A fixed row count is wrong for every model but
one: on the CPU of these machines (1 thread, forward + input-gradient backward, ``benchmarks/bench_chunks.py``) the
fastest chunk holds 64–128 rows of the 32² digits CNN (0.4 MiB of forward activations per row), 8–32 rows of the
32² ResNet-8 (4.2 MiB per row) and 2–8 rows of a 224² ResNet-18 (33.5 MiB per row); 256 rows cost 1.1×, 1.7× and
(memory permitting) more than the best. What the three optima share is the forward-activation volume of a chunk:
tens of MiB, about what stays cache- and allocator-friendly. Allocator-friendly matters on a small model: with glibc,
a chunk that frees more than its dynamic trim threshold (at most 2 × 32 MiB) hands the memory back to the OS and the
next chunk faults it in again — on the digits CNN 197 rows (80 MiB) took 13 000–115 000 minor page faults per IG-50
call and ran 1.24× the 98-row chunk, which took none (docs/performance.md). So the default chunk is

    rows = max(1, ⌊budget / activation bytes of one row⌋)

with the bytes of one row counted once per (model, input shape) by a gradient-free forward of a single row that
sums the sizes of every new tensor (not views) the model's operators produce — but never fewer rows than the batch
has images, nor fewer than :data:`MIN_FLOOR_ROWS` (one perturbation of the whole batch, the chunk Captum's and
Quantus' loops use) as long as those stay within :data:`BATCH_FLOOR_BUDGETS` budgets: at 224² the budget alone gives
ResNet-18 1 row, and 2 rows cost 1.14× the fastest chunk forward + backward and 1.41× gradient-free
(``bench_chunks.py``, 2026-11-30), 4 rows 1.03× / 0.90×, 1 row (IG) 1.56 of the floor against 1.36 at 2 rows.
The budget also bounds peak memory: a chunk's forward activations stay below ``BATCH_FLOOR_BUDGETS × budget`` and
its backward keeps about those alive, so the peak is a small multiple of ``budget`` whatever the image and batch
size (IG at 224² with a fixed 256-row chunk grew the process by 4.3 GiB).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from lit_xai.attribution.base import AttributionError

#: Forward-activation bytes per chunk on a CPU: 40 MiB gives the digits CNN its measured fastest chunk (98 rows, no
#: page faults; 80 MiB = 197 rows ran 1.24×) and, with the batch floor, ResNet-8 and ResNet-18 224² the chunks
#: measured within 1.1× of their best (docs/performance.md, "Chunk size").
CPU_BUDGET_BYTES = 40 * 2**20
#: Forward-activation bytes per chunk on an accelerator, where larger chunks fill the device: 2 GiB (the backward
#: roughly doubles the peak). Not yet measured on a GPU; override with ``budget_bytes`` or ``max_batch``.
ACCELERATOR_BUDGET_BYTES = 2 * 2**30
#: A chunk holds at least the batch's image count of rows (and :data:`MIN_FLOOR_ROWS`) while those rows' activations
#: stay within this many budgets (160 MiB on a CPU: ResNet-18 224² up to 4 rows per chunk, ResNet-8 32² up to 38,
#: the digits CNN up to 390).
BATCH_FLOOR_BUDGETS = 4
#: The batch floor's least rows: one 224² ResNet-18 row per forward measured 1.56 of the IG floor, two rows 1.36
#: (docs/performance.md), so a single image is explained two rows at a time when two fit the floor's budgets.
MIN_FLOOR_ROWS = 2

_PER_ROW_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple, int]] = weakref.WeakKeyDictionary()


class _OutputBytes(TorchDispatchMode):
    """Sums the bytes of every new tensor an operator produces while active (views share storage: not counted)."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 (torch's protocol)
        out = func(*args, **(kwargs or {}))
        for item in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(item, Tensor) and not item._is_view():
                self.total += item.numel() * item.element_size()
        return out


def activation_bytes_per_row(model: nn.Module, inputs: Tensor) -> int:
    """Bytes of all operator outputs in a forward of one row of ``inputs`` (cached per model and row shape)."""
    key = (tuple(inputs.shape[1:]), inputs.dtype, inputs.device.type)
    per_model = _PER_ROW_CACHE.setdefault(model, {})
    if key not in per_model:
        counter = _OutputBytes()
        with torch.no_grad(), counter:
            model(inputs[:1])
        per_model[key] = max(counter.total, 1)
    return per_model[key]


def default_budget(device: torch.device) -> int:
    """:data:`CPU_BUDGET_BYTES` on a CPU, :data:`ACCELERATOR_BUDGET_BYTES` elsewhere."""
    return CPU_BUDGET_BYTES if device.type == "cpu" else ACCELERATOR_BUDGET_BYTES


def check_max_batch(max_batch: int | None) -> int | None:
    """Validate a rows-per-forward setting: a positive int, or ``None`` for the budget rule."""
    if max_batch is not None and (not isinstance(max_batch, int) or isinstance(max_batch, bool) or max_batch < 1):
        raise AttributionError(f"max_batch must be a positive int or None (sized by memory), got {max_batch!r}")
    return max_batch


def rows_per_chunk(
    model: nn.Module, inputs: Tensor, max_batch: int | None = None, budget_bytes: int | None = None
) -> int:
    """``max_batch`` if given, else ``max(⌊budget / r⌋, min(max(B, MIN_FLOOR_ROWS), ⌊BATCH_FLOOR_BUDGETS · budget /
    r⌋), 1)`` with ``r`` the activation bytes of one row and ``B`` the images in ``inputs``."""
    if max_batch is not None:
        return max_batch
    budget = default_budget(inputs.device) if budget_bytes is None else budget_bytes
    if budget < 1:
        raise AttributionError(f"budget_bytes must be positive, got {budget}")
    per_row = activation_bytes_per_row(model, inputs)
    floor = max(inputs.shape[0], MIN_FLOOR_ROWS)
    return max(1, budget // per_row, min(floor, BATCH_FLOOR_BUDGETS * budget // per_row))


def row_chunks(total: int, rows: int) -> Iterator[tuple[int, int]]:
    """``[start, end)`` ranges of at most ``rows`` rows covering ``range(total)``."""
    for start in range(0, total, rows):
        yield start, min(start + rows, total)
