"""Random Logit test (Sixt et al. 2020): does the map change when another class is explained?

For every image the method is re-run for one other class ``c ≠ target``, drawn uniformly from the other classes,
and the map of the target is compared with the map of ``c`` by SSIM; lower is better (a class-sensitive method).
As Quantus 0.6 ``RandomLogit``: both maps normalised by their max |value| (``normalise``), SSIM over the flattened
maps as 1-D signals (``layout="flat"``) with skimage's default window 7 and the pair's value range (``data_range=
"pair"``); :func:`lit_xai.metrics.similarity.ssim` reproduces ``skimage.metrics.structural_similarity``.

The other class is drawn per image from a generator seeded with (``seed``, the image's content)
(:mod:`lit_xai.attribution.noise`); Quantus reseeds NumPy with ``seed`` per batch and draws for the batch positions,
so its class for an image depends on the batch. The number of classes is ``num_classes`` or, by default, read from
the model's output on one image (Quantus takes it as an argument, default 1000). Cost: one method call per image, on
chunks of ``max_batch`` images (``None``: the methods' memory-budget rule,
:func:`lit_xai.attribution.batching.rows_per_chunk`); the scores do not depend on the chunking.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lit_xai.attribution.batching import check_max_batch, row_chunks, rows_per_chunk
from lit_xai.attribution.noise import sample_seeds
from lit_xai.metrics.base import Explainer, check_finite
from lit_xai.metrics.image_scores import ImageScoreMean, prepared_maps
from lit_xai.metrics.similarity import check_data_range, ssim

LAYOUTS = ("flat", "2d")


class RandomLogit(ImageScoreMean):
    """SSIM between the target's map and a random other class's map (Sixt et al. 2020); see the module docstring.

    Args:
        seed: base seed of the other classes (ours; Quantus default ``seed=42`` reseeds NumPy per batch).
        normalise: divide both maps by their image's max |value|, ``True`` (Quantus default; Quantus divides by the
            max over the whole batch, ours per image: equal on one-image batches).
        absolute: ``|a|`` first, ``False`` (Quantus default).
        layout: ``flat`` (Quantus: the maps reshaped to vectors) or ``2d`` (SSIM over rows and columns, Wang et al.).
        ssim_window: 7 (skimage's default ``win_size``, which Quantus uses).
        ssim_data_range: ``"pair"`` (Quantus: max − min over both maps of the pair) or a number.
        num_classes: the model's number of classes; ``None`` (default): the width of its output on one image.
        max_batch: images per method call; ``None`` (default): the methods' memory-budget rule (docs/performance.md
            "Chunk size"), as every metric that evaluates many rows (issue 18; Quantus: the batch). The scores do
            not depend on it.
    """

    requires = frozenset({"method"})
    higher_is_better = False

    def __init__(self, seed: int = 0, normalise: bool = True, absolute: bool = False, layout: str = "flat",
                 ssim_window: int = 7, ssim_data_range: float | str = "pair", num_classes: int | None = None,
                 max_batch: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if layout not in LAYOUTS:
            raise ValueError(f"layout={layout!r}: expected one of {LAYOUTS}")
        check_data_range(ssim_data_range)
        self.seed, self.normalise, self.absolute, self.layout = seed, normalise, absolute, layout
        self.ssim_window, self.ssim_data_range = ssim_window, ssim_data_range
        self.num_classes, self.max_batch = num_classes, check_max_batch(max_batch)

    def other_classes(self, inputs: Tensor, target: Tensor, num_classes: int) -> Tensor:
        """One class ``≠ target`` per image ``[B]``, uniform over the other ``num_classes − 1``."""
        if num_classes < 2:
            raise ValueError(f"RandomLogit needs a model with ≥ 2 classes, got {num_classes}")
        seeds = sample_seeds(inputs, self.seed, "random_logit")
        draws = torch.empty(len(seeds), dtype=torch.long)
        generator = torch.Generator()  # re-seeded per image: the draws of a fresh generator per image, cheaper
        for out, seed in zip(draws.unbind(0), seeds):
            generator.manual_seed(seed)
            out.random_(0, num_classes - 1, generator=generator)
        draws = draws.to(target.device)
        return draws + (draws >= target).long()

    def _layout(self, maps: Tensor) -> Tensor:
        maps = prepared_maps(maps, self.absolute, self.normalise)
        return maps.flatten(1)[:, None, None] if self.layout == "flat" else maps

    def _image_scores(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor,
                      method: Explainer | None) -> Tensor:
        assert method is not None
        classes = self.num_classes if self.num_classes is not None else int(model(inputs[:1]).shape[1])
        other = self.other_classes(inputs, target, classes)
        with torch.enable_grad():
            parts = [method(model, inputs[begin:stop], other[begin:stop]).detach()
                     for begin, stop in row_chunks(inputs.shape[0], rows_per_chunk(model, inputs, self.max_batch))]
        other_maps = parts[0] if len(parts) == 1 else torch.cat(parts)
        check_finite(other_maps, method)
        if other_maps.shape != maps.shape:
            raise ValueError(f"the method's maps for the other classes have shape {tuple(other_maps.shape)}, the "
                             f"given maps {tuple(maps.shape)}")
        return ssim(self._layout(maps), self._layout(other_maps), self.ssim_window, self.ssim_data_range)
