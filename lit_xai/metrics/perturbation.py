"""Pixel-perturbation curves: MoRF/LeRF (Samek et al. 2017) and Deletion/Insertion (Petsiuk et al. 2018).

One engine serves all four. Pixels (over H×W, channels together; maps reduced over channels first, layer maps
upsampled) — or, with ``rank_by="feature"``, the C×H×W features one by one as Quantus does — are ranked by relevance;
at step k the first ``n_k`` ranked pixels are switched from a *start* image to an *end* image and the target class's
output is recorded:

- removal (MoRF, LeRF, Deletion): start = the input, end = the fill (:mod:`lit_xai.metrics.baselines`: ``zero`` =
  the dataset mean of normalised inputs, ``black``, ``image_mean``, ``image_min``, ``blur`` or a number);
- insertion: start = the blurred canvas (Gaussian, kernel 29, σ 15), end = the input.

MoRF ranks the most relevant pixels first, LeRF the least relevant. Ties are broken by pixel index (stable sort),
so the curve is deterministic. The recorded output is the target softmax (``probability``), the target logit
(``logit``) or the absolute fractional change ``|p_k − p_0| / p_0`` of seeds 000/001 (``fractional_change``).

The score is an area under the mean curve ``y_0 … y_K`` (``y_0``: nothing switched); ``auc`` picks the convention:

- ``fraction`` (default): trapezoid over the switched fraction of pixels ``n_k / P``, ``y_0`` included; a schedule
  that stops at ``max_fraction`` = 0.1 integrates over [0, 0.1] (not rescaled);
- ``rise``: the RISE code's ``(Σ y − y_0/2 − y_K/2) / K``, i.e. the trapezoid over K equal steps on [0, 1] whatever
  ``max_fraction`` is (a short last step counts as a full one);
- ``quantus``: Quantus' ``np.trapz(y_1 … y_K, dx=1)`` (Quantus records no ``y_0``; the area grows with K);
- ``inputiba``: the InputIBA code's ``trapezoid(y_1 … y_K, dx=1/K)`` (``y_0`` dropped).

The (images × steps) perturbed inputs are built on the device with one ``torch.where`` per chunk and evaluated
``max_batch`` rows per forward (``None``: the shared memory-budget rule of the methods,
:func:`lit_xai.attribution.batching.rows_per_chunk`, ⌊budget / forward-activation bytes of one row⌋): memory is
bounded by the chunk, the cost is the forward passes the protocol needs, and the scores do not depend on the chunking.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lit_xai.attribution.batching import check_max_batch, row_chunks, rows_per_chunk
from lit_xai.metrics.base import pixel_scores, trapezoid_auc
from lit_xai.metrics.baselines import BLUR_PADDINGS, Fill, baseline_images, check_fill
from lit_xai.metrics.image_scores import PerImageMetric
from lit_xai.metrics.outputs import target_output

ORDERS = ("morf", "lerf")
MODES = ("remove", "insert")
OUTPUTS = ("probability", "logit", "sigmoid", "identity", "fractional_change")
AUCS = ("fraction", "rise", "quantus", "inputiba")
RANK_BY = ("pixel", "feature")


def pixel_ranks(scores: Tensor, order: str) -> Tensor:
    """Rank of every pixel ``[B, P]``: 0 = perturbed first. MoRF: highest score first; LeRF: lowest first."""
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; expected one of {ORDERS}")
    sorted_idx = torch.sort(scores, dim=1, descending=order == "morf", stable=True).indices
    ranks = torch.empty_like(sorted_idx)
    positions = torch.arange(scores.shape[1], device=scores.device).expand_as(sorted_idx)
    return ranks.scatter_(1, sorted_idx, positions)


def step_counts(
    num_pixels: int, pixels_per_step: int | None, num_steps: int | None, max_fraction: float
) -> Tensor:
    """Number of switched pixels at each step, starting at 0 and ending at ``round(max_fraction · P)``."""
    if (pixels_per_step is None) == (num_steps is None):
        raise ValueError("give exactly one of pixels_per_step and num_steps")
    if not 0 < max_fraction <= 1:
        raise ValueError(f"max_fraction must be in (0, 1], got {max_fraction}")
    last = max(1, round(max_fraction * num_pixels))
    if pixels_per_step is not None:
        if pixels_per_step < 1:
            raise ValueError(f"pixels_per_step must be ≥ 1, got {pixels_per_step}")
        counts = torch.arange(0, last + 1, pixels_per_step)
        if counts[-1] != last:
            counts = torch.cat([counts, torch.tensor([last])])
        return counts
    if num_steps < 1:  # type: ignore[operator]
        raise ValueError(f"num_steps must be ≥ 1, got {num_steps}")
    return torch.linspace(0, last, num_steps + 1).round().long()  # type: ignore[operator]


def curve_area(curves: Tensor, fractions: Tensor, auc: str) -> Tensor:
    """Area under ``curves`` ``[..., K+1]`` recorded at the switched ``fractions`` ``[K+1]`` (see module doc)."""
    steps = curves.shape[-1] - 1
    if auc == "fraction":
        return trapezoid_auc(curves, fractions)
    if auc == "rise":
        return trapezoid_auc(curves, torch.linspace(0, 1, steps + 1))
    if auc == "quantus":
        return trapezoid_auc(curves[..., 1:], torch.arange(steps, dtype=torch.float32))
    if auc == "inputiba":
        return trapezoid_auc(curves[..., 1:], torch.arange(steps, dtype=torch.float32) / steps)
    raise ValueError(f"unknown auc convention {auc!r}; expected one of {AUCS}")


def target_outputs(
    model: nn.Module,
    start: Tensor,
    end: Tensor,
    ranks: Tensor,
    counts: Tensor,
    target: Tensor,
    max_batch: int | None = None,
    output: str = "probability",
) -> Tensor:
    """Target output ``[B, K]`` after switching the ``counts[k]`` first-ranked pixels from ``start`` to ``end``.

    ``ranks`` ``[B, H*W]`` rank pixels (all channels switch together) or ``[B, C*H*W]`` single features. The
    flattened (step, image) pairs are evaluated ``max_batch`` at a time (``None``: by the memory budget,
    :func:`~lit_xai.attribution.batching.rows_per_chunk`), one forward per chunk.
    """
    batch, channels, height, width = start.shape
    mask_channels = ranks.shape[1] // (height * width)
    rows = rows_per_chunk(model, start, check_max_batch(max_batch))
    steps = counts.shape[0]
    counts = counts.to(start.device)
    total = steps * batch
    result = torch.empty(total, device=start.device)
    for begin, stop in row_chunks(total, rows):
        pair = torch.arange(begin, stop, device=start.device)
        step, image = pair // batch, pair % batch
        switched = (ranks[image] < counts[step, None]).view(-1, mask_channels, height, width)
        logits = model(torch.where(switched, end[image], start[image]))
        recorded = "probability" if output == "fractional_change" else output
        result[pair] = target_output(logits, target[image], recorded)
    return result.view(steps, batch).T


class PerturbationCurve(PerImageMetric):
    """The general perturbation curve; :class:`PixelPerturbation`, :class:`Deletion`, :class:`Insertion` preset it.

    Args:
        order: ``morf`` (most relevant first) or ``lerf`` (least relevant first).
        mode: ``remove`` (input → fill) or ``insert`` (canvas → input).
        baseline: the fill of removed pixels, or the insertion canvas: ``zero`` (dataset mean of normalised
            inputs), ``black`` (needs ``data_mean``/``data_std``), ``image_mean``, ``image_min``, ``blur`` or a number.
        output: ``probability`` (target softmax), ``logit``, ``sigmoid`` (a multi-label output), ``identity`` (a
            regression or expected region score; :mod:`lit_xai.metrics.outputs`) or ``fractional_change``
            (|p_k − p_0|/p_0 of the softmax, removal only).
        pixels_per_step / num_steps: the step schedule; ``pixels_per_step`` wins when both are given.
        max_fraction: the fraction of pixels switched at the last step (seed 000/001 LeRF: 0.1).
        auc: the area convention of the score: ``fraction``, ``rise``, ``quantus`` or ``inputiba`` (module doc).
        rank_by: ``pixel`` (H×W pixels, channels switched together; Samek, Petsiuk) or ``feature`` (C×H×W single
            features, as Quantus' PixelFlipping; 1-channel maps are repeated over the channels, ties by index).
        blur_kernel_size, blur_sigma, blur_padding: the Gaussian of the ``blur`` fill/canvas (padding
            ``replicate``, ``reflect`` as torchvision/InputIBA, ``zeros`` as the RISE code).
        data_mean, data_std: the data's per-channel normalisation, needed by ``black`` (the callback passes the
            DataModule's through :meth:`set_data_normalisation`).
        channel_reduction: how maps are reduced over channels before ranking (``sum``, ``abs_sum``, ``max_abs``).
        min_probability: skip images whose clean target probability is below this (InputIBA code: 0.6).
        max_batch: perturbed images per forward pass; ``None`` (default): the methods' memory-budget rule
            (:func:`lit_xai.attribution.batching.rows_per_chunk`: 40 MiB of forward activations per chunk on a CPU,
            2 GiB on an accelerator; docs/performance.md "Chunk size"). The scores do not depend on it.
    """

    curve_label = "fraction of pixels"

    def __init__(
        self,
        order: str = "morf",
        mode: str = "remove",
        baseline: Fill = "zero",
        output: str = "probability",
        pixels_per_step: int | None = None,
        num_steps: int | None = 20,
        max_fraction: float = 1.0,
        auc: str = "fraction",
        rank_by: str = "pixel",
        blur_kernel_size: int = 29,  # App. D.3: "kernel size equal to 29"
        blur_sigma: float = 15.0,  # App. D.3: "standard deviation for Gaussian kernel is 15"
        blur_padding: str = "replicate",  # lit_xai choice (small images); RISE code: zeros, torchvision: reflect
        data_mean: Sequence[float] | None = None,
        data_std: Sequence[float] | None = None,
        channel_reduction: str = "sum",
        min_probability: float = 0.0,
        max_batch: int | None = None,  # None: lit_xai.attribution.batching's memory budget
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if order not in ORDERS or mode not in MODES or output not in OUTPUTS:
            raise ValueError(
                f"order={order!r}, mode={mode!r}, output={output!r}: expected order in {ORDERS}, "
                f"mode in {MODES}, output in {OUTPUTS}"
            )
        if auc not in AUCS or rank_by not in RANK_BY or blur_padding not in BLUR_PADDINGS:
            raise ValueError(f"auc={auc!r}, rank_by={rank_by!r}, blur_padding={blur_padding!r}: expected auc in "
                             f"{AUCS}, rank_by in {RANK_BY}, blur_padding in {BLUR_PADDINGS}")
        check_fill(baseline, data_mean, data_std)
        if output == "fractional_change" and mode != "remove":
            raise ValueError("output='fractional_change' is defined for mode='remove' only")
        if output in ("logit", "identity") and min_probability > 0:
            raise ValueError(f"min_probability filters on the target probability; output={output!r} records none")
        if pixels_per_step is not None:
            num_steps = None
        step_counts(100, pixels_per_step, num_steps, max_fraction)  # validate the schedule early
        self.max_batch = check_max_batch(max_batch)
        self.order, self.mode, self.baseline, self.output = order, mode, baseline, output
        self.pixels_per_step, self.num_steps, self.max_fraction = pixels_per_step, num_steps, max_fraction
        self.auc, self.rank_by = auc, rank_by
        self.blur_kernel_size, self.blur_sigma, self.blur_padding = blur_kernel_size, blur_sigma, blur_padding
        self.data_mean = None if data_mean is None else tuple(float(m) for m in data_mean)
        self.data_std = None if data_std is None else tuple(float(s) for s in data_std)
        self.channel_reduction, self.min_probability = channel_reduction, min_probability
        drops = (order == "morf") == (mode == "remove")  # the curve falls when relevant pixels go first
        self._higher_is_better = (not drops) if output != "fractional_change" else drops
        self._counts: Tensor | None = None
        self._num_pixels = 0
        self.add_state("curve_sum", torch.zeros(0), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("skipped", torch.tensor(0.0), dist_reduce_fx="sum")

    @property
    def higher_is_better(self) -> bool:  # type: ignore[override]
        """Removal curves that fall when relevant pixels go first are better low; the others high."""
        return self._higher_is_better

    def set_data_normalisation(self, mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
        if self.data_mean is None and mean is not None and std is not None:
            check_fill(self.baseline, mean, std)
            self.data_mean, self.data_std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    def prepare(self, model: nn.Module, image_size: tuple[int, ...]) -> None:
        """Fix the step schedule for ``image_size`` (``(H, W)``, or ``(C, H, W)``, which ``rank_by="feature"``
        needs to allocate early) and allocate the curve state (every DDP rank must call it)."""
        if self.rank_by == "feature" and len(image_size) < 3:
            return  # the schedule counts C·H·W features: allocated on the first update
        num_pixels = int(image_size[-2]) * int(image_size[-1])
        if self.rank_by == "feature":
            num_pixels *= int(image_size[-3])
        if self._counts is None or num_pixels != self._num_pixels:
            self._counts = step_counts(num_pixels, self.pixels_per_step, self.num_steps, self.max_fraction)
            self._num_pixels = num_pixels
        if self.curve_sum.numel() != self._counts.numel():
            if self.count > 0:
                raise ValueError(f"image size changed to {tuple(image_size)} within one evaluation")
            self.curve_sum = torch.zeros(self._counts.numel(), device=self.count.device)

    def _ranks(self, inputs: Tensor, maps: Tensor) -> Tensor:
        """Perturbation ranks ``[B, H*W]`` (pixels) or ``[B, C*H*W]`` (features)."""
        height, width = inputs.shape[-2:]
        if self.rank_by == "pixel":
            return pixel_ranks(pixel_scores(maps, (height, width), self.channel_reduction), self.order)
        if maps.shape[1] not in (1, inputs.shape[1]):
            raise ValueError(f"rank_by='feature' needs maps with 1 or {inputs.shape[1]} channels, got {maps.shape[1]}")
        if tuple(maps.shape[-2:]) != (height, width):
            maps = torch.nn.functional.interpolate(maps.float(), size=(height, width), mode="bilinear",
                                                   align_corners=False)
        return pixel_ranks(maps.float().expand(-1, inputs.shape[1], -1, -1).flatten(1), self.order)

    def image_curves(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor) -> tuple[Tensor, Tensor]:
        """Per-image curves ``[B, K]`` of the recorded output and the clean target probability ``[B]``."""
        self.prepare(model, tuple(inputs.shape[-3:]))
        assert self._counts is not None
        ranks = self._ranks(inputs, maps)
        base = baseline_images(inputs, self.baseline, self.blur_kernel_size, self.blur_sigma,
                               data_mean=self.data_mean, data_std=self.data_std, blur_padding=self.blur_padding)
        start, end = (inputs, base) if self.mode == "remove" else (base, inputs)
        curves = target_outputs(model, start, end, ranks, self._counts, target, self.max_batch, self.output)
        if self.mode == "remove":
            clean = curves[:, 0]
        elif self.max_fraction == 1.0:
            clean = curves[:, -1]
        else:
            recorded = "probability" if self.output == "fractional_change" else self.output
            clean = target_output(model(inputs), target, recorded)
        if self.output == "fractional_change":
            curves = (curves - clean[:, None]).abs() / clean[:, None].clamp_min(1e-12)
        return curves, clean

    def _image_results(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor,
                       **extras: Any) -> dict[str, Tensor]:
        """Per image: the area under its curve (``"score"``, not filtered by ``min_probability``) and the curve."""
        curves, _ = self.image_curves(model, inputs, target, maps)
        return {"score": curve_area(curves, self.curve_axis(), self.auc), "curve/" + self.output: curves}

    def _update(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor, **extras: Any) -> None:
        curves, clean = self.image_curves(model, inputs, target, maps)
        keep = clean >= self.min_probability if self.min_probability > 0 else torch.ones_like(clean, dtype=torch.bool)
        self.curve_sum += curves[keep].sum(0)
        self.count += keep.sum()
        self.skipped += (~keep).sum()
        # this update's per-image areas (= image_scores on the batch): the callback pairs methods image by image
        # without a second pass over the curves (not a state: never synced or reset)
        self.last_image_scores = curve_area(curves, self.curve_axis(), self.auc)

    def curve_axis(self) -> Tensor:
        if self._counts is None:
            raise ValueError(f"{type(self).__name__} has seen no images yet")
        return self._counts.float() / self._num_pixels

    def compute(self) -> dict[str, Tensor]:
        if self.count == 0:
            raise ValueError(f"{type(self).__name__}.compute() called before any image was evaluated")
        curve = self.curve_sum / self.count
        return {"score": curve_area(curve, self.curve_axis(), self.auc), "curve/" + self.output: curve,
                "count": self.count}


class PixelPerturbation(PerturbationCurve):
    """MoRF / LeRF pixel perturbation (Samek et al.): remove pixels in relevance order to the fill, by default
    ``zero`` — 0 in normalised space, the dataset mean (seeds 000/001/004, reference.md "Pixel perturbation")."""

    def __init__(
        self,
        order: str = "morf",
        baseline: Fill = "zero",  # reference.md "Pixel perturbation": 0 in normalised space (seeds 000/001/004)
        output: str = "probability",  # Samek et al.: the target softmax
        **kwargs: Any,
    ):
        super().__init__(order=order, mode="remove", baseline=baseline, output=output, **kwargs)


class Deletion(PerturbationCurve):
    """Deletion (Petsiuk et al.; dissertation App. D.3): the most relevant pixels first, 10 per step ("we set the
    batch size to be 10"), to black ("we delete pixel by replacing it with black pixel"), target softmax AUC.

    ``black`` is pixel value 0 before normalisation and needs the data's ``data_mean``/``data_std`` (the callback
    passes the DataModule's); ``baseline="zero"`` is the RISE code's fill (0 in normalised space, the dataset mean).
    """

    def __init__(
        self,
        baseline: Fill = "black",  # App. D.3: "replacing it with black pixel"
        pixels_per_step: int | None = 10,  # App. D.3: "we set the batch size to be 10"
        num_steps: int | None = None,
        **kwargs: Any,
    ):
        pixels_per_step = None if num_steps is not None else pixels_per_step
        super().__init__(
            order="morf", mode="remove", baseline=baseline, pixels_per_step=pixels_per_step, num_steps=num_steps,
            **kwargs,
        )


class Insertion(PerturbationCurve):
    """Insertion (Petsiuk et al.; dissertation App. D.3): restore the most relevant pixels first, 10 per step, onto
    a blurred canvas ("Gaussian blur with kernel size equal to 29, standard deviation ... 15")."""

    def __init__(
        self,
        baseline: Fill = "blur",  # App. D.3: blurred canvas, kernel 29, σ 15 (PerturbationCurve's blur defaults)
        pixels_per_step: int | None = 10,  # App. D.3: "we set the batch size to be 10"
        num_steps: int | None = None,
        **kwargs: Any,
    ):
        pixels_per_step = None if num_steps is not None else pixels_per_step
        super().__init__(
            order="morf", mode="insert", baseline=baseline, pixels_per_step=pixels_per_step, num_steps=num_steps,
            **kwargs,
        )
