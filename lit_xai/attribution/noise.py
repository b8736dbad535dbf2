"""Per-sample seeded randomness: a sample's noise depends on (``seed``, stream, the sample's content) only.

Every random method (the ``random`` control, SmoothGrad, …) draws the noise of image ``b`` from its own CPU
``torch.Generator``, seeded with a 64-bit BLAKE2b digest of the method's ``seed``, a stream name (so two methods with
the same ``seed`` do not share noise unless they mean to) and the image's bytes. So an image gets the same noise in a
batch of 1 or 256, in any position, in one process or N DDP processes, on any device, and however often the method
ran before (e.g. when a metric re-runs it) — the noise is not a sequence advanced by calls. Draws happen on the CPU
(one short loop over the batch for the RNG only) and move to the inputs' device; the global torch generator is never
touched. Identical images get identical noise.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import torch
from torch import Tensor


def sample_seeds(inputs: Tensor, seed: int, stream: str) -> list[int]:
    """One 64-bit seed per sample of ``inputs`` ``[B, ...]``: BLAKE2b-64 of (stream, seed, dtype, shape, bytes).

    ``-0.0`` and ``0.0`` count as the same content; the dtype is part of the identity (a float64 copy of a float32
    image draws other noise, as its draws have another dtype anyway).
    """
    host = (inputs.detach().to("cpu") + 0.0).contiguous()  # + 0.0 turns -0.0 into 0.0
    header = f"lit_xai.noise|{stream}|{int(seed)}|{host.dtype}|{tuple(host.shape[1:])}|".encode()
    rows = host.reshape(host.shape[0], -1).view(torch.uint8).numpy()  # one view; a row is hashed without a copy
    seeds = []
    for row in rows:
        digest = hashlib.blake2b(header, digest_size=8)
        digest.update(row)
        seeds.append(int.from_bytes(digest.digest(), "little"))
    return seeds


def sample_generators(inputs: Tensor, seed: int, stream: str) -> list[torch.Generator]:
    """A fresh CPU generator per sample, seeded by :func:`sample_seeds`."""
    return [torch.Generator().manual_seed(value) for value in sample_seeds(inputs, seed, stream)]


def per_sample(generators: Sequence[torch.Generator], draw: Callable[[torch.Generator], Tensor],
               device: torch.device) -> Tensor:
    """``stack([draw(g) for g in generators])`` on ``device``: each sample's draw from its own generator."""
    return torch.stack([draw(generator) for generator in generators]).to(device)


def per_sample_normal(inputs: Tensor, seed: int, stream: str, shape: Sequence[int] | None = None) -> Tensor:
    """Standard-normal noise ``[B, *shape]`` (``shape`` defaults to one sample's), dtype and device of ``inputs``."""
    size = tuple(inputs.shape[1:] if shape is None else shape)
    return per_sample(sample_generators(inputs, seed, stream),
                      lambda g: torch.randn(size, generator=g, dtype=inputs.dtype), inputs.device)


def per_sample_uniform(inputs: Tensor, seed: int, stream: str, shape: Sequence[int] | None = None) -> Tensor:
    """``U[0, 1)`` noise ``[B, *shape]`` (``shape`` defaults to one sample's), dtype and device of ``inputs``."""
    size = tuple(inputs.shape[1:] if shape is None else shape)
    return per_sample(sample_generators(inputs, seed, stream),
                      lambda g: torch.rand(size, generator=g, dtype=inputs.dtype), inputs.device)


class NoiseStream:
    """Gaussian noise rows for batched sampling (step-major: row ``n·B + b`` is draw ``n`` of image ``b``).

    Row ``(n, b)`` is ``σ_b · ε``, ε the ``n``-th standard-normal draw ``[C, H, W]`` of image ``b``'s generator, so
    it does not depend on ``max_batch``, the batch composition or the device. Blocks are drawn lazily, one step
    ``n`` at a time, and only the blocks a chunk needs are held; chunks must be requested in increasing row order.
    ``generators`` may have drawn other values before (e.g. per-sample path positions); draws continue from there.
    """

    def __init__(self, inputs: Tensor, sigma: Tensor, generators: Sequence[torch.Generator]) -> None:
        if len(generators) != inputs.shape[0]:
            raise ValueError(f"NoiseStream needs one generator per sample: {len(generators)} for {inputs.shape[0]}")
        self.shape = inputs.shape
        self.dtype = inputs.dtype
        self.device = inputs.device
        self.sigma = sigma.view(-1, *([1] * (inputs.dim() - 1)))
        self.generators = list(generators)
        self.blocks: dict[int, Tensor] = {}
        self.drawn = 0

    def block(self, n: int) -> Tensor:
        """Draw ``n`` of every image, ``[B, C, H, W]``, scaled by σ."""
        while self.drawn <= n:
            draw = per_sample(self.generators, lambda g: torch.randn(self.shape[1:], generator=g, dtype=self.dtype),
                              self.device)
            self.blocks[self.drawn] = draw * self.sigma
            self.drawn += 1
        return self.blocks[n]

    def rows(self, start: int, end: int) -> Tensor:
        """Rows ``[start, end)`` of the step-major layout."""
        batch = self.shape[0]
        first, last = start // batch, (end - 1) // batch
        for old in [k for k in self.blocks if k < first]:
            del self.blocks[old]
        stacked = torch.cat([self.block(n) for n in range(first, last + 1)])
        offset = first * batch
        return stacked[start - offset : end - offset]
