"""Faithfulness beyond curves: Faithfulness Correlation, Monotonicity (Arya / Nguyen), Infidelity, ROAD, IROF.

All score the map per input *feature* (C×H×W; a 1-channel map is repeated over the channels and layer maps are
upsampled, as Quantus 0.6 broadcasts ``a_batch`` to ``x_batch``) and perturb the inputs by replacing features with a
*fill* (:mod:`lit_xai.metrics.baselines`; ``image_min`` is Quantus' ``perturb_baseline="black"``). The perturbed
images of a batch are built on the device with one ``torch.where`` per chunk and evaluated ``max_batch`` at a time
(``None``: the methods' memory-budget rule, :func:`lit_xai.attribution.batching.rows_per_chunk`), one forward per
chunk: the cost is the forwards the protocol needs, and the scores do not depend on the chunking. Random choices come
from per-image generators seeded with (``seed``, the image's content) (:mod:`lit_xai.attribution.noise`), so a score
does not depend on the batch, its order, the device or the DDP rank.

- :class:`FaithfulnessCorrelation` (Bhatt et al. 2020 Eq. 3): Pearson correlation, over ``num_runs`` random subsets
  S of ``subset_size`` features, between ``Σ_{i∈S} a_i`` and ``f(x) − f(x_{S←fill})``. Higher is better.
- :class:`Monotonicity` (Arya et al. 2019, AIX360 ``monotonicity_metric``; Quantus ``Monotonicity``): start from the
  fill, insert the input's features in increasing order of relevance ``features_in_step`` at a time; 1 if the target
  probability never falls, else 0. Higher is better.
- :class:`MonotonicityCorrelation` (Nguyen & Martínez 2020 §4; Quantus ``MonotonicityCorrelation``): for each step's
  features, the variance ``E[(f(x_{S←u}) − f(x))²] / f(x)²`` over ``num_samples`` uniform fills u, Spearman-correlated
  with the step's relevance. Higher is better.
- :class:`Infidelity` (Yeh et al. 2019 Eq. 2, with Quantus 0.6's perturbation): square patches in raster order are
  replaced by the fill one after another, cumulatively; the mean over steps of
  ``(Σ a·(x − x̃) − (f(x) − f(x̃)))²``, averaged over the patch sizes. Lower is better.
- :class:`ROAD` (Rong et al. 2022): the top ``p``% pixels (MoRF) are replaced by *noisy linear imputation* (each
  removed pixel the weighted mean of its 8 neighbours, solved jointly, plus N(0, ``noise``²)); the score is the mean
  over the percentages of "still predicted as the target". Lower is better (MoRF).
- :class:`IROF` (Rieger & Hansen 2020): superpixels (SLIC) removed cumulatively in decreasing mean relevance to the
  fill; the area over the curve of ``f(x̃)/f(x)``. Higher is better.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_xai.attribution.batching import check_max_batch, row_chunks, rows_per_chunk
from lit_xai.attribution.noise import sample_generators, sample_seeds
from lit_xai.metrics.base import Explainer, pixel_scores
from lit_xai.metrics.baselines import Fill, baseline_images, check_fill
from lit_xai.metrics.image_scores import ImageScoreMean, feature_maps, prepared_maps
from lit_xai.metrics.imputation import BANDED_MAX_SIDE, banded_imputation
from lit_xai.metrics.outputs import OUTPUTS, target_output
from lit_xai.metrics.perturbation import pixel_ranks
from lit_xai.metrics.similarity import centred_unit, spearman


def class_outputs(logits: Tensor, target: Tensor, output: str) -> Tensor:
    """The explained target's recorded output ``[N]`` (float32): ``logit``, softmax ``probability``, ``sigmoid``
    (multi-label) or ``identity`` (regression / region scores); :mod:`lit_xai.metrics.outputs`."""
    return target_output(logits, target, output)


def chunked_outputs(model: nn.Module, build: Callable[[Tensor], tuple[Tensor, Tensor]], rows: int,
                    inputs: Tensor, max_batch: int | None, output: str) -> Tensor:
    """``[rows]`` class outputs of the perturbed images ``build(row_indices) -> (images, target)`` (images shaped as
    ``inputs``), one forward per chunk of ``max_batch`` rows (``None``: :func:`rows_per_chunk`'s budget rule)."""
    result = torch.empty(rows, device=inputs.device)
    for begin, stop in row_chunks(rows, rows_per_chunk(model, inputs, max_batch)):
        index = torch.arange(begin, stop, device=inputs.device)
        images, target = build(index)
        result[index] = class_outputs(model(images), target, output)
    return result


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation of matching rows ``[B, N]`` (0 where a row is constant; scipy gives NaN there)."""
    return (centred_unit(a) * centred_unit(b)).sum(-1).float()


class FilledPerturbation(ImageScoreMean):
    """The fill and output arguments shared by this module's metrics."""

    def __init__(self, baseline: Fill, output: str, max_batch: int | None, data_mean: Sequence[float] | None,
                 data_std: Sequence[float] | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_fill(baseline, data_mean, data_std)
        if output not in OUTPUTS:
            raise ValueError(f"output={output!r}: expected one of {OUTPUTS}")
        self.baseline, self.output, self.max_batch = baseline, output, check_max_batch(max_batch)
        self.data_mean = None if data_mean is None else tuple(float(m) for m in data_mean)
        self.data_std = None if data_std is None else tuple(float(s) for s in data_std)

    def set_data_normalisation(self, mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
        if self.data_mean is None and mean is not None and std is not None:
            check_fill(self.baseline, mean, std)
            self.data_mean, self.data_std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    def fill(self, inputs: Tensor) -> Tensor:
        """The fill image of every input ``[B, C, H, W]``."""
        return baseline_images(inputs, self.baseline, data_mean=self.data_mean, data_std=self.data_std)


class FaithfulnessCorrelation(FilledPerturbation):
    """Faithfulness Correlation (Bhatt et al. 2020 Eq. 3); see the module docstring.

    Args:
        num_runs: random subsets per image, 100 (Quantus default ``nr_runs``; the paper gives no number).
        subset_size: features per subset |S|, 224 (Quantus default; the paper gives no number). Must be < C·H·W.
        baseline: the fill, ``image_min`` (Quantus default ``perturb_baseline="black"`` = the image's minimum).
        output: ``logit`` (Quantus default ``softmax=False``) or ``probability``.
        absolute: ``|a|`` first, ``False`` (Quantus default: signed attributions).
        normalise: divide by the image's max |a|, ``True`` (Quantus default; Pearson is scale-free, so no effect).
        seed: base seed of the subsets (ours; Quantus draws from NumPy's global generator).
        max_batch: perturbed images per forward (``None``: the methods' memory-budget rule, docs/performance.md
            "Chunk size"; the scores do not depend on it).
        data_mean, data_std: the data's normalisation, for the ``black`` fill.
    """

    higher_is_better = True

    def __init__(self, num_runs: int = 100, subset_size: int = 224, baseline: Fill = "image_min",
                 output: str = "logit", absolute: bool = False, normalise: bool = True, seed: int = 0,
                 max_batch: int | None = None, data_mean: Sequence[float] | None = None,
                 data_std: Sequence[float] | None = None, **kwargs: Any) -> None:
        super().__init__(baseline, output, max_batch, data_mean, data_std, **kwargs)
        if num_runs < 2 or subset_size < 1:
            raise ValueError(f"num_runs must be ≥ 2 and subset_size ≥ 1, got {num_runs} and {subset_size}")
        self.num_runs, self.subset_size, self.seed = num_runs, subset_size, seed
        self.absolute, self.normalise = absolute, normalise

    def subsets(self, inputs: Tensor) -> Tensor:
        """The random feature subsets ``[B, num_runs, subset_size]`` (indices into C·H·W) of every image."""
        features = inputs[0].numel()
        if self.subset_size >= features:
            raise ValueError(f"subset_size={self.subset_size} must be smaller than the {features} features per image")
        draws = [torch.rand(self.num_runs, features, generator=g).topk(self.subset_size, dim=1).indices
                 for g in sample_generators(inputs, self.seed, "faithfulness_correlation")]
        return torch.stack(draws).to(inputs.device)

    def _image_scores(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor,
                      method: Explainer | None) -> Tensor:
        batch = inputs.shape[0]
        relevance = prepared_maps(feature_maps(maps, inputs), self.absolute, self.normalise).flatten(1)
        subsets = self.subsets(inputs)
        flat, fill = inputs.flatten(1), self.fill(inputs).flatten(1)

        def build(rows: Tensor) -> tuple[Tensor, Tensor]:
            run, image = rows // batch, rows % batch
            removed = torch.zeros_like(flat[image], dtype=torch.bool).scatter_(1, subsets[image, run], True)
            return torch.where(removed, fill[image], flat[image]).view(-1, *inputs.shape[1:]), target[image]

        perturbed = chunked_outputs(model, build, self.num_runs * batch, inputs, self.max_batch, self.output)
        deltas = class_outputs(model(inputs), target, self.output)[:, None] - perturbed.view(self.num_runs, batch).T
        sums = relevance.gather(1, subsets.flatten(1)).view(batch, self.num_runs, -1).sum(-1)
        return pearson(sums, deltas)


class Monotonicity(FilledPerturbation):
    """Monotonicity (Arya et al. 2019); see the module docstring. Score per image: 1.0 or 0.0.

    Quantus 0.6 ``Monotonicity`` replaces the step's features of its baseline image by the baseline value again
    (never by the input's), so its curve is flat and every image scores True; ours inserts the input's values, as
    AIX360's ``monotonicity_metric`` (``x_copy[ind] = x[ind]``) and Quantus' docstring describe.

    Args:
        features_in_step: features inserted per step, 1 (Arya: one at a time; Quantus default). Cost: C·H·W /
            ``features_in_step`` forwards per image.
        baseline: the start image, ``image_min`` (Quantus default ``perturb_baseline="black"``; AIX360 takes a
            user-given ``base``).
        output: ``probability`` (AIX360 ``predict_proba``; Quantus default ``softmax=True``) or ``logit``.
        absolute: order by ``|a|``, ``True`` (Quantus default; AIX360 sorts the signed coefficients: ``False``).
        max_batch, data_mean, data_std: as :class:`FaithfulnessCorrelation`.
    """

    higher_is_better = True

    def __init__(self, features_in_step: int = 1, baseline: Fill = "image_min", output: str = "probability",
                 absolute: bool = True, max_batch: int | None = None, data_mean: Sequence[float] | None = None,
                 data_std: Sequence[float] | None = None, **kwargs: Any) -> None:
        super().__init__(baseline, output, max_batch, data_mean, data_std, **kwargs)
        if features_in_step < 1:
            raise ValueError(f"features_in_step must be ≥ 1, got {features_in_step}")
        self.features_in_step, self.absolute = features_in_step, absolute

    def curves(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor) -> Tensor:
        """The class output after each insertion step ``[B, ceil(C·H·W / features_in_step)]``."""
        batch = inputs.shape[0]
        relevance = prepared_maps(feature_maps(maps, inputs), self.absolute, False).flatten(1)
        ranks = pixel_ranks(relevance, "lerf")  # 0 = least relevant = inserted first (stable: ties by index)
        flat, fill = inputs.flatten(1), self.fill(inputs).flatten(1)
        steps = math.ceil(flat.shape[1] / self.features_in_step)

        def build(rows: Tensor) -> tuple[Tensor, Tensor]:
            step, image = rows // batch, rows % batch
            inserted = ranks[image] < ((step + 1) * self.features_in_step)[:, None]
            return torch.where(inserted, flat[image], fill[image]).view(-1, *inputs.shape[1:]), target[image]

        return chunked_outputs(model, build, steps * batch, inputs, self.max_batch, self.output).view(steps, batch).T

    def _image_scores(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor,
                      method: Explainer | None) -> Tensor:
        return (self.curves(model, inputs, target, maps).diff(dim=1) >= 0).all(1).float()


class MonotonicityCorrelation(ImageScoreMean):
    """Monotonicity Correlation (Nguyen & Martínez 2020); see the module docstring.

    Step s holds the features ranked ``[s·k, (s+1)·k)`` in increasing relevance (k = ``features_in_step``); in each
    of ``num_samples`` draws they all take one value u ~ U[``uniform_low``, ``uniform_high``) of the image (Quantus'
    ``perturb_baseline="uniform"``), the rest of the image is the input. The variance is divided by ``f(x)²`` where
    ``|f(x)| ≥ eps`` (Quantus). The score is Spearman's ρ between the step relevances and variances (0 where either is
    constant; scipy, and so Quantus, give NaN there).

    Args:
        features_in_step: k, 1 (Quantus default). Cost: ``num_samples`` · C·H·W / k forwards per image.
        num_samples: uniform draws per step, 100 (Quantus default ``nr_samples``; the paper gives no number).
        uniform_low, uniform_high: the fill's range, [0, 1) (Quantus ``uniform_low``/``uniform_high`` defaults).
        eps: 1e-5 (Quantus default).
        output: ``probability`` (Quantus default ``softmax=True``; the paper's "probability estimation").
        absolute: ``|a|``, ``True`` (Nguyen: "absolute values of the attributions"; Quantus default).
        seed: base seed of the uniform draws (ours; Quantus draws from NumPy's global generator).
        max_batch: as :class:`FaithfulnessCorrelation`.
    """

    higher_is_better = True

    def __init__(self, features_in_step: int = 1, num_samples: int = 100, uniform_low: float = 0.0,
                 uniform_high: float = 1.0, eps: float = 1e-5, output: str = "probability", absolute: bool = True,
                 seed: int = 0, max_batch: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if output not in OUTPUTS:
            raise ValueError(f"output={output!r}: expected one of {OUTPUTS}")
        if features_in_step < 1 or num_samples < 1 or not uniform_low < uniform_high:
            raise ValueError(f"features_in_step={features_in_step}, num_samples={num_samples}, uniform range "
                             f"[{uniform_low}, {uniform_high}): expected ≥ 1, ≥ 1 and low < high")
        self.features_in_step, self.num_samples, self.eps = features_in_step, num_samples, eps
        self.output, self.max_batch = output, check_max_batch(max_batch)
        self.uniform_low, self.uniform_high, self.absolute, self.seed = uniform_low, uniform_high, absolute, seed

    def fills(self, inputs: Tensor, steps: int) -> Tensor:
        """The uniform fill values ``[B, steps, num_samples]`` of every image."""
        draws = [torch.rand(steps, self.num_samples, generator=g, dtype=torch.float64)
                 for g in sample_generators(inputs, self.seed, "monotonicity_correlation")]
        scale = self.uniform_high - self.uniform_low
        return (torch.stack(draws) * scale + self.uniform_low).to(inputs.device, inputs.dtype)

    def _image_scores(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor,
                      method: Explainer | None) -> Tensor:
        batch, samples = inputs.shape[0], self.num_samples
        relevance = prepared_maps(feature_maps(maps, inputs), self.absolute, False).flatten(1)
        step_of = pixel_ranks(relevance, "lerf") // self.features_in_step  # [B, F]: the step of every feature
        steps = math.ceil(relevance.shape[1] / self.features_in_step)
        fills, flat = self.fills(inputs, steps), inputs.flatten(1)

        def build(rows: Tensor) -> tuple[Tensor, Tensor]:  # row = (step · samples + sample) · B + image
            image, draw = rows % batch, rows // batch
            step, sample = draw // samples, draw % samples
            value = fills[image, step, sample][:, None]
            images = torch.where(step_of[image] == step[:, None], value, flat[image])
            return images.view(-1, *inputs.shape[1:]), target[image]

        outputs = chunked_outputs(model, build, steps * samples * batch, inputs, self.max_batch, self.output)
        clean = class_outputs(model(inputs), target, self.output)
        weight = torch.where(clean.abs() >= self.eps, clean.double().abs().clamp_min(self.eps) ** -2, 1.0)
        squared = (outputs.view(steps, samples, batch).double() - clean.double()) ** 2
        variance = squared.mean(1).T * weight[:, None]  # [B, steps]
        step_relevance = torch.zeros(batch, steps, dtype=torch.float64, device=inputs.device)
        step_relevance.scatter_add_(1, step_of, relevance.double())
        return spearman(step_relevance, variance)


class Infidelity(FilledPerturbation):
    """Infidelity (Yeh et al. 2019 Eq. 2) with Quantus 0.6's deterministic square-patch perturbation.

    For patch size p, the image is tiled into p×p patches (raster order, partial patches at the right/bottom edge);
    step j replaces patches 0…j by the fill (cumulatively, all channels), ``x̃_j``; the per-image score is
    ``mean_j (Σ a·(x − x̃_j) − (f(x) − f(x̃_j)))²``, averaged over ``patch_sizes``. Cost: Σ_p ⌈H/p⌉·⌈W/p⌉ forwards.

    Quantus repeats this deterministic loop ``n_perturb_samples`` = 10 times and averages identical numbers; we run it
    once (same score). Quantus pads the image (edge mode) to a multiple of p and then indexes the unpadded image, so
    it agrees with ours only where p divides H and W. Yeh et al.'s random perturbations (Gaussian noise, random
    squares) are not this protocol.

    Args:
        patch_sizes: square sizes, ``(4,)`` (Quantus default ``perturb_patch_sizes=[4]``; Yeh's code draws squares).
        baseline: the fill, ``image_min`` (Quantus default ``perturb_baseline="black"``).
        output: ``logit`` (Quantus default ``softmax=False``) or ``probability``.
        absolute, normalise: applied to the map first, both ``False`` (Quantus defaults; the score depends on the
            map's scale, as Yeh's Eq. 2).
        max_batch, data_mean, data_std: as :class:`FaithfulnessCorrelation`.
    """

    higher_is_better = False

    def __init__(self, patch_sizes: Sequence[int] = (4,), baseline: Fill = "image_min", output: str = "logit",
                 absolute: bool = False, normalise: bool = False, max_batch: int | None = None,
                 data_mean: Sequence[float] | None = None, data_std: Sequence[float] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(baseline, output, max_batch, data_mean, data_std, **kwargs)
        self.patch_sizes = tuple(int(p) for p in patch_sizes)
        if not self.patch_sizes or min(self.patch_sizes) < 1:
            raise ValueError(f"patch_sizes must be positive integers, got {list(patch_sizes)}")
        self.absolute, self.normalise = absolute, normalise

    def _patch_loss(self, model: nn.Module, inputs: Tensor, target: Tensor, weighted: Tensor, fill: Tensor,
                    clean: Tensor, patch: int) -> Tensor:
        batch, _, height, width = inputs.shape
        rows, cols = math.ceil(height / patch), math.ceil(width / patch)
        patch_of = ((torch.arange(height, device=inputs.device) // patch)[:, None] * cols
                    + torch.arange(width, device=inputs.device) // patch)  # [H, W]
        padded = F.pad(weighted, (0, cols * patch - width, 0, rows * patch - height))
        explained = padded.view(batch, rows, patch, cols, patch).sum((2, 4)).flatten(1).cumsum(1)  # [B, steps]

        def build(index: Tensor) -> tuple[Tensor, Tensor]:
            step, image = index // batch, index % batch
            removed = (patch_of <= step[:, None, None])[:, None]
            return torch.where(removed, fill[image], inputs[image]), target[image]

        outputs = chunked_outputs(model, build, rows * cols * batch, inputs, self.max_batch, self.output)
        deltas = clean[:, None] - outputs.view(rows * cols, batch).T
        return ((explained.double() - deltas.double()) ** 2).mean(1)

    def _image_scores(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor,
                      method: Explainer | None) -> Tensor:
        relevance = prepared_maps(feature_maps(maps, inputs), self.absolute, self.normalise)
        fill = self.fill(inputs)
        weighted = (relevance * (inputs - fill)).sum(1)  # [B, H, W]: Σ_c a·(x − fill) per pixel
        clean = class_outputs(model(inputs), target, self.output)
        losses = [self._patch_loss(model, inputs, target, weighted, fill, clean, p) for p in self.patch_sizes]
        return torch.stack(losses).mean(0).float()


#: ROAD's imputation stencil (Rong et al. 2022 code ``NoisyLinearImputer``; Quantus ``noisy_linear_imputation``):
#: direct neighbours 1/6, diagonal ones 1/12
ROAD_STENCIL = ((1 / 12, 1 / 6, 1 / 12), (1 / 6, 0.0, 1 / 6), (1 / 12, 1 / 6, 1 / 12))


def linear_imputation(images: Tensor, removed: Tensor, tol: float = 1e-10, max_iter: int | None = None,
                      solver: str = "auto") -> Tensor:
    """Removed pixels replaced by the solution of ROAD's linear system, batched: ``[N, C, H, W]``, ``removed``
    ``[N, 1, H, W]`` (bool). ``solver``: ``cg`` (below), ``banded`` (exact, one banded Cholesky on the CPU,
    :mod:`lit_xai.metrics.imputation`), ``auto`` (ours): ``banded`` on the CPU for images whose shorter side is at
    most :data:`~lit_xai.metrics.imputation.BANDED_MAX_SIDE`, else ``cg``.

    Each removed pixel equals the stencil-weighted mean of its in-image neighbours (known ones fixed), i.e.
    ``(D − W) v = W_known x`` with D the sum of the in-image neighbour weights — the system Quantus solves with
    ``scipy.sparse.linalg.spsolve``. It is symmetric positive definite wherever a removed region touches a known
    pixel, so conjugate gradients on the whole batch (the operator is one 3×3 convolution) solve it to ``tol``
    (relative residual); at most ``max_iter`` iterations (``None``: the pixel count, CG's exact-arithmetic bound).
    Computed in float64 (float32 on MPS, which has none).
    """
    if solver not in ("auto", "cg", "banded"):
        raise ValueError(f"solver={solver!r}: expected 'auto', 'cg' or 'banded'")
    if solver == "banded" or (solver == "auto" and images.device.type == "cpu"
                              and min(images.shape[-2:]) <= BANDED_MAX_SIDE):
        return banded_imputation(images, removed, ROAD_STENCIL)
    dtype = torch.float32 if images.device.type == "mps" else torch.float64
    channels = images.shape[1]
    kernel = torch.tensor(ROAD_STENCIL, dtype=dtype, device=images.device).expand(channels, 1, 3, 3)
    unknown = removed.expand_as(images).to(dtype)
    known = images.to(dtype) * (1 - unknown)

    def neighbours(v: Tensor) -> Tensor:
        return F.conv2d(v, kernel, padding=1, groups=channels)

    degree = neighbours(torch.ones_like(known[:1]))

    def operator(v: Tensor) -> Tensor:
        return unknown * (degree * v - neighbours(v))

    rhs = unknown * neighbours(known)
    solution = torch.zeros_like(rhs)
    residual = rhs.clone()
    direction = residual.clone()
    norm = residual.flatten(1).pow(2).sum(1)
    bound = rhs.flatten(1).norm(dim=1).clamp_min(torch.finfo(dtype).tiny) * tol
    for _ in range(max_iter or images[0, 0].numel()):
        if bool((norm.sqrt() <= bound).all()):
            break
        step = operator(direction)
        curvature = (direction * step).flatten(1).sum(1)
        alpha = torch.where(curvature > 0, norm / curvature.clamp_min(torch.finfo(dtype).tiny), 0.0)
        solution = solution + alpha.view(-1, 1, 1, 1) * direction
        residual = residual - alpha.view(-1, 1, 1, 1) * step
        new_norm = residual.flatten(1).pow(2).sum(1)
        beta = torch.where(norm > 0, new_norm / norm.clamp_min(torch.finfo(dtype).tiny), 0.0)
        direction = residual + beta.view(-1, 1, 1, 1) * direction
        norm = new_norm
    return torch.where(removed, solution.to(images.dtype), images)


class ROAD(ImageScoreMean):
    """ROAD: RemOve And Debias (Rong et al. 2022) with noisy linear imputation; see the module docstring.

    Pixels (channels together, maps reduced over channels by ``channel_reduction``) are ranked most relevant first
    (``order="morf"``) or least (``lerf``); at percentage p the first ``int(H·W·p/100)`` are imputed (Quantus'
    count) and the noise ``noise · ε`` (ε ~ N(0, 1) per channel and pixel, per image and percentage) is added to
    them. The curve is the fraction of images still classified as ``target``; the score is its mean.

    Quantus 0.6 ``ROAD`` ranks C·H·W features but imputes H·W pixels, so it fails (IndexError) on images with more
    than one channel; on 1-channel images it equals ours (``tests/conformance``).

    Args:
        percentages: the removal percentages, 1, 3, …, 99 (Quantus default ``range(1, 100, 2)``).
        noise: standard deviation of the imputation noise, 0.01 (Quantus default; the ROAD code's
            ``NoisyLinearImputer(noise=0.01)``).
        order: ``morf`` (Quantus; lower is better) or ``lerf`` (higher is better).
        channel_reduction: how maps are reduced over channels before ranking pixels, ``sum`` (ours, as the pixel
            perturbation metrics).
        seed: base seed of the noise (ours; Quantus draws from NumPy's global generator).
        tol: relative residual of the imputation's linear solve, 1e-10 (ours; Quantus solves directly).
        max_batch: imputed images per solve and forward (``None``: the methods' memory-budget rule).
    """

    curve_label = "removed pixels (%)"

    def __init__(self, percentages: Sequence[float] = tuple(range(1, 100, 2)), noise: float = 0.01,
                 order: str = "morf", channel_reduction: str = "sum", seed: int = 0, tol: float = 1e-10,
                 max_batch: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.percentages = tuple(float(p) for p in percentages)
        if not self.percentages or not all(0 <= p < 100 for p in self.percentages):
            raise ValueError(f"percentages must be in [0, 100), got {list(percentages)}")
        if order not in ("morf", "lerf") or noise < 0:
            raise ValueError(f"order={order!r}, noise={noise}: expected 'morf' or 'lerf' and noise ≥ 0")
        self.noise, self.order, self.channel_reduction = noise, order, channel_reduction
        self.seed, self.tol, self.max_batch = seed, tol, check_max_batch(max_batch)
        self.add_state("curve_sum", torch.zeros(len(self.percentages), dtype=torch.float64), dist_reduce_fx="sum")

    @property
    def higher_is_better(self) -> bool:  # type: ignore[override]
        """MoRF: a faithful map makes the accuracy fall fast (low); LeRF: slowly (high)."""
        return self.order == "lerf"

    def noise_draws(self, inputs: Tensor, rows: Tensor) -> Tensor:
        """The noise ``[N, C, H·W]`` of the (percentage, image) ``rows`` (``p · B + b``), by pixel rank (entry r: the
        pixel ranked r): row (p, b) draws from a generator seeded with image b's seed (``seed``, its content) + p."""
        batch, channels = inputs.shape[:2]
        seeds = sample_seeds(inputs, self.seed, "road")
        draws = [torch.randn(channels, inputs[0, 0].numel(), dtype=torch.float64,
                             generator=torch.Generator().manual_seed((seeds[row % batch] + row // batch) % 2**64))
                 for row in rows.tolist()]
        return torch.stack(draws).to(inputs.device, inputs.dtype) * self.noise

    def imputed(self, inputs: Tensor, maps: Tensor, rows: Tensor | None = None) -> Tensor:
        """The imputed images of the (percentage, image) ``rows`` (``p · B + b``; default: all), ``[N, C, H, W]``."""
        batch, channels, height, width = inputs.shape
        ranks = pixel_ranks(pixel_scores(maps, (height, width), self.channel_reduction), self.order)
        counts = torch.tensor([int(height * width * p / 100) for p in self.percentages], device=inputs.device)
        rows = torch.arange(len(self.percentages) * batch, device=inputs.device) if rows is None else rows
        step, image = rows // batch, rows % batch
        removed = ranks[image] < counts[step, None]  # [N, H·W]
        noise = self.noise_draws(inputs, rows).gather(2, ranks[image, None].expand(-1, channels, -1))
        filled = linear_imputation(inputs[image], removed.view(-1, 1, height, width), self.tol)
        return torch.where(removed[:, None], filled.flatten(2) + noise, filled.flatten(2)).view(-1, channels, height,
                                                                                               width)

    def curves(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor) -> Tensor:
        """1.0 where the imputed image is still classified as ``target``, ``[B, P]``."""
        batch = inputs.shape[0]
        result = torch.empty(len(self.percentages) * batch, device=inputs.device)
        for begin, stop in row_chunks(result.shape[0], rows_per_chunk(model, inputs, self.max_batch)):
            rows = torch.arange(begin, stop, device=inputs.device)
            result[rows] = (model(self.imputed(inputs, maps, rows)).argmax(1) == target[rows % batch]).float()
        return result.view(-1, batch).T

    def _image_results(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor,
                       **extras: Any) -> dict[str, Tensor]:
        curves = self.curves(model, inputs, target, maps)
        return {"score": curves.mean(1), "curve/accuracy": curves}

    def _update(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor, **extras: Any) -> None:
        curves = self.curves(model, inputs, target, maps)
        self.last_image_scores = curves.mean(1)
        self.curve_sum += curves.double().sum(0)
        self.score_sum += self.last_image_scores.double().sum()
        self.count += curves.shape[0]

    def curve_axis(self) -> Tensor:
        return torch.tensor(self.percentages)

    def compute(self) -> dict[str, Tensor]:
        result = super().compute()
        result["curve/accuracy"] = (self.curve_sum / self.count).float()
        return result


def slic_segments(inputs: Tensor, n_segments: int, compactness: float) -> Tensor:
    """SLIC superpixels of every image ``[B, H, W]`` (labels 0…n_b − 1), as Quantus 0.6 computes them:
    ``skimage.segmentation.slic(image as H×W×C float64, start_label=0)``. A CPU loop over the images (scikit-image
    has no batched or GPU SLIC); scikit-image is needed only here."""
    try:
        from skimage.segmentation import slic
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("IROF's SLIC superpixels need scikit-image: pip install scikit-image") from error
    host = inputs.detach().to("cpu", torch.float64).permute(0, 2, 3, 1).numpy()
    labels = [torch.unique(torch.from_numpy(slic(image, n_segments=n_segments, compactness=compactness,
                                                 start_label=0)), return_inverse=True)[1] for image in host]
    return torch.stack(labels).to(inputs.device)


class IROF(FilledPerturbation):
    """IROF: Iterative Removal Of Features (Rieger & Hansen 2020), Quantus 0.6's formula; see the module docstring.

    Superpixels are ordered by their mean relevance (over channels and pixels) in decreasing order; step s replaces
    superpixels 0…s by the fill (cumulatively, all channels) and records ``f(x̃_s)/f(x)`` (softmax of the target).
    The per-image score is Quantus' area over the curve ``n − trapz(y_0 … y_{n−1}, dx=1)`` (n superpixels of the
    image; the clean point is not recorded). Higher is better. Cost: n forwards per image (only each image's own
    steps are evaluated).

    Differences by design from Quantus 0.6: its ``"mean"`` fill is the mean over all axes of the *whole batch's
    currently perturbed* images, recomputed at every step (so a score depends on the other images and drifts as
    superpixels are filled); ours is fixed per image (default: the image's per-channel mean). Quantus also pads
    images with fewer superpixels than the batch's maximum with zeros *inside* its trapezoid, lowering their area by
    ``y_{n−1}/2``. With a constant fill on one-image batches both agree (``tests/conformance``).

    Args:
        baseline: the fill, ``image_mean`` (the image's per-channel mean: ours, closest to Quantus' default
            ``"mean"`` without its batch dependence, see above), or any fill of :mod:`lit_xai.metrics.baselines`.
        n_segments, compactness: SLIC's, 100 and 10.0 (scikit-image defaults, which Quantus uses).
        output: ``probability`` (Quantus default ``softmax=True``) or ``logit``.
        max_batch, data_mean, data_std: as :class:`FaithfulnessCorrelation`.
    """

    higher_is_better = True

    def __init__(self, baseline: Fill = "image_mean", n_segments: int = 100, compactness: float = 10.0,
                 output: str = "probability", max_batch: int | None = None,
                 data_mean: Sequence[float] | None = None, data_std: Sequence[float] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(baseline, output, max_batch, data_mean, data_std, **kwargs)
        if n_segments < 1:
            raise ValueError(f"n_segments must be ≥ 1, got {n_segments}")
        self.n_segments, self.compactness = n_segments, compactness

    def curves(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor,
               segments: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``f(x̃_s)/f(x)`` ``[B, n_max]`` (0 after an image's last superpixel) and the superpixel counts ``[B]``."""
        batch = inputs.shape[0]
        segments = slic_segments(inputs, self.n_segments, self.compactness) if segments is None else segments
        counts = segments.flatten(1).amax(1) + 1
        longest = int(counts.max())
        relevance = feature_maps(maps, inputs).float().mean(1).flatten(1)  # [B, H·W]
        flat_segments = segments.flatten(1)
        totals = torch.zeros(batch, longest, device=inputs.device).scatter_add_(1, flat_segments, relevance)
        sizes = torch.zeros(batch, longest, device=inputs.device).scatter_add_(1, flat_segments,
                                                                                torch.ones_like(relevance))
        means = torch.where(sizes > 0, totals / sizes.clamp_min(1), -torch.inf)  # absent labels go last
        segment_rank = pixel_ranks(means, "morf")  # 0 = the most relevant superpixel, removed first
        pixel_rank = segment_rank.gather(1, flat_segments).view_as(segments)[:, None]  # [B, 1, H, W]
        fill = self.fill(inputs)
        steps = torch.arange(longest, device=inputs.device).repeat_interleave(batch)
        images = torch.arange(batch, device=inputs.device).repeat(longest)
        active = (steps < counts[images]).nonzero()[:, 0]

        def build(index: Tensor) -> tuple[Tensor, Tensor]:
            step, image = steps[active[index]], images[active[index]]
            removed = pixel_rank[image] <= step.view(-1, 1, 1, 1)
            return torch.where(removed, fill[image], inputs[image]), target[image]

        values = chunked_outputs(model, build, active.shape[0], inputs, self.max_batch, self.output)
        clean = class_outputs(model(inputs), target, self.output)
        curve = torch.zeros(longest * batch, device=inputs.device)
        curve[active] = values / clean[images[active]]
        return curve.view(longest, batch).T, counts

    def _image_scores(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor,
                      method: Explainer | None) -> Tensor:
        curve, counts = self.curves(model, inputs, target, maps)
        # trapz(y_0 … y_{n−1}, dx=1) = Σ y − (y_0 + y_{n−1}) / 2 over each image's own n points
        last = curve.gather(1, (counts - 1)[:, None]).squeeze(1)
        area = curve.sum(1) - (curve[:, 0] + last) / 2
        return counts.float() - area
