"""Deep-image-prior patch decoder, batched over independent members (dissertation ch. 7 §3.5).

Each patch is the output of an untrained encoder–decoder with skip connections (Ulyanov et al.'s ``skip``
network) fed a fixed noise tensor; the optimisation runs over the decoder's weights, not the pixels.
Reference configuration (the authors' ``networks.py::skip_net`` in CAMP-eXplain-AI/Do-Explanations-Explain): 32 noise
channels, depth 6 with 16…128 channels, 4-channel 1×1 skips, down kernels 5, 3, 5, 5, 3, 5 and up kernels
5, 3, 5, 3, 5, 3 per level (each up block followed by a 1×1 convolution), reflection padding, average-pool down,
bilinear up, a final 3×3 stride-3 convolution + sigmoid mapping a 256² noise input to an 86² patch.

Batching design: ``G`` decoders (one per patch of every scene) are held as stacked parameters
(``[G, C_out, C_in, k, k]``) and run on a ``[1, G·C, H, W]`` activation, so one forward/backward serves all
scenes. Members never mix: a k×k convolution is a *grouped* convolution (``groups=G``), a 1×1 convolution a
batched matrix product (``torch.baddbmm`` over ``[G, C, H·W]``), normalisation is per channel
(``F.instance_norm``, exactly what a BatchNorm in training mode computes on the reference's batch of one), and
concatenations interleave per member. Because RMSprop is element-wise, one optimiser over the stacked parameters
updates each member exactly as a separate optimiser would.

Speed on CPU (benchmarks/bench_axioms.py): PyTorch's backward of a grouped convolution on a contiguous (NCHW)
input falls back to a slow per-group kernel; on a ``channels_last`` input the oneDNN kernel handles the groups
(3× faster on the decoder's largest convolution), except for 1×1 kernels, which fall back again, hence the
bmm for those. We chose explicit stacked parameters over ``torch.func.vmap`` + ``functional_call`` (vmap
lowers a batched conv weight to the same grouped convolution on a contiguous input, and im2col + bmm was slower
still): plain ``nn.Parameter`` s work with any optimiser, ``state_dict`` and device move.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _member_uniform(shape: tuple[int, ...], bound: float, generators: Sequence[torch.Generator]) -> Tensor:
    """``U(-bound, bound)`` with each member's slice drawn from its own generator (batch-invariant init)."""
    return torch.stack([(torch.rand(shape, generator=g) * 2 - 1) * bound for g in generators])


class BatchedDeepImagePrior(nn.Module):
    """``G`` independent deep-image-prior decoders; ``forward()`` returns patches ``[G, out_channels, p, p]``.

    Args:
        seeds: one seed per member; a member's weights and noise depend only on its seed, so a scene is
            the same whether it is generated alone or in a batch.
        patch_size: side ``p`` of the generated patch (the stride-3 head output is centre-cropped to it).
        out_channels: image channels of the classifier.
        noise_channels: channels of the fixed noise input (reference 32).
        channels: down/up channels per level; the depth is ``len(channels)`` (reference 16, 32, 64, 128, 128, 128).
        skip_channels: skip-connection channels per level, 0 = no skip (reference 0, 4, 4, 4, 4, 4).
        down_kernel_sizes: kernel of the two encoder convolutions per level (reference 5, 3, 5, 5, 3, 5).
        up_kernel_sizes: kernel of the decoder convolution per level (reference 5, 3, 5, 3, 5, 3).
        noise_size: side of the noise input; must be a multiple of ``2**depth`` and large enough for the
            stride-3 head to reach ``patch_size`` (default: the smallest such size).
        noise_scale: the noise is ``U(0, 1) * noise_scale`` (deep image prior's default 0.1).
        negative_slope: LeakyReLU slope (deep image prior's default 0.2).
    """

    def __init__(
        self,
        seeds: Sequence[int],
        patch_size: int = 86,
        out_channels: int = 3,
        noise_channels: int = 32,
        channels: Sequence[int] = (16, 32, 64, 128, 128, 128),
        skip_channels: Sequence[int] = (0, 4, 4, 4, 4, 4),
        down_kernel_sizes: Sequence[int] = (5, 3, 5, 5, 3, 5),
        up_kernel_sizes: Sequence[int] = (5, 3, 5, 3, 5, 3),
        noise_size: int | None = None,
        noise_scale: float = 0.1,
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        if len(seeds) == 0:
            raise ValueError("BatchedDeepImagePrior needs at least one member seed")
        if len(channels) == 0 or len(channels) != len(skip_channels):
            raise ValueError(
                f"channels and skip_channels must be non-empty and equally long (one entry per level), "
                f"got {len(channels)} and {len(skip_channels)}"
            )
        for name, sizes in (("down_kernel_sizes", down_kernel_sizes), ("up_kernel_sizes", up_kernel_sizes)):
            if len(sizes) != len(channels) or any(k < 1 or k % 2 != 1 for k in sizes):
                raise ValueError(
                    f"{name} must hold one odd kernel size per level ({len(channels)} levels), got {tuple(sizes)}"
                )
        depth = len(channels)
        multiple = 2**depth
        min_size = 3 * patch_size - 2  # the stride-3 head maps n to floor((n - 1) / 3) + 1 pixels
        if noise_size is None:
            noise_size = math.ceil(min_size / multiple) * multiple
        if noise_size % multiple != 0 or noise_size < min_size:
            raise ValueError(
                f"noise_size={noise_size} must be a multiple of 2**depth={multiple} and at least "
                f"3*patch_size-2={min_size}"
            )
        self.members = len(seeds)
        self.patch_size = patch_size
        self.out_channels = out_channels
        self.channels = tuple(channels)
        self.skip_channels = tuple(skip_channels)
        self.down_kernel_sizes = tuple(down_kernel_sizes)
        self.up_kernel_sizes = tuple(up_kernel_sizes)
        self.negative_slope = negative_slope
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

        noise = torch.stack([torch.rand(noise_channels, noise_size, noise_size, generator=g) for g in generators])
        self.register_buffer("noise", noise.mul_(noise_scale).reshape(1, -1, noise_size, noise_size))

        self.levels = nn.ModuleList()
        in_ch = noise_channels
        for level, (ch, skip) in enumerate(zip(self.channels, self.skip_channels)):
            deeper_out = self.channels[level + 1] if level + 1 < depth else ch
            down, up = self.down_kernel_sizes[level], self.up_kernel_sizes[level]
            params = nn.ParameterDict()
            self._add_conv(params, "down1", in_ch, ch, down, generators)
            self._add_conv(params, "down2", ch, ch, down, generators)
            if skip:
                self._add_conv(params, "skip", in_ch, skip, 1, generators)
            self._add_norm(params, "merge", skip + deeper_out)
            self._add_conv(params, "up1", skip + deeper_out, ch, up, generators)
            self._add_conv(params, "up2", ch, ch, 1, generators)
            self.levels.append(params)
            in_ch = ch
        self.head = nn.ParameterDict()
        self._add_conv(self.head, "to_image", self.channels[0], out_channels, 1, generators, norm=False)
        self._add_conv(self.head, "stride3", out_channels, out_channels, 3, generators, norm=False)

    def _add_conv(
        self,
        params: nn.ParameterDict,
        name: str,
        in_ch: int,
        out_ch: int,
        kernel: int,
        generators: Sequence[torch.Generator],
        norm: bool = True,
    ) -> None:
        """Stacked conv weights with nn.Conv2d's default init (U(±1/√fan_in)), plus a norm after it."""
        bound = 1.0 / math.sqrt(in_ch * kernel * kernel)
        params[f"{name}_weight"] = nn.Parameter(_member_uniform((out_ch, in_ch, kernel, kernel), bound, generators))
        params[f"{name}_bias"] = nn.Parameter(_member_uniform((out_ch,), bound, generators))
        if norm:
            self._add_norm(params, name, out_ch)

    def _add_norm(self, params: nn.ParameterDict, name: str, ch: int) -> None:
        params[f"{name}_norm_weight"] = nn.Parameter(torch.ones(self.members, ch))
        params[f"{name}_norm_bias"] = nn.Parameter(torch.zeros(self.members, ch))

    def _conv(self, x: Tensor, params: nn.ParameterDict, name: str, zero_pad: bool = False, stride: int = 1) -> Tensor:
        """Each member's convolution of its own channels: ``[1, G·C, H, W]`` → ``[1, G·C_out, H', W']``."""
        weight, bias = params[f"{name}_weight"], params[f"{name}_bias"]
        kernel = weight.shape[-1]
        if kernel == 1 and stride == 1:
            height, width = x.shape[-2:]
            columns = x.reshape(self.members, -1, height * width)
            out = torch.baddbmm(bias.unsqueeze(-1), weight.flatten(2), columns)
            return out.view(1, -1, height, width)
        pad = kernel // 2
        if pad and not zero_pad:
            x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        return F.conv2d(
            x.contiguous(memory_format=torch.channels_last),
            weight.flatten(0, 1),
            bias.flatten(),
            stride=stride,
            padding=pad if zero_pad else 0,
            groups=self.members,
        )

    def _norm_act(self, x: Tensor, params: nn.ParameterDict, name: str) -> Tensor:
        weight, bias = params[f"{name}_norm_weight"].flatten(), params[f"{name}_norm_bias"].flatten()
        x = F.instance_norm(x, weight=weight, bias=bias)
        return F.leaky_relu(x, self.negative_slope)

    def _member_cat(self, a: Tensor, b: Tensor) -> Tensor:
        """Concatenate channels per member: ``[1, G·Ca, H, W]`` + ``[1, G·Cb, H, W]`` → ``[1, G·(Ca+Cb), H, W]``."""
        g, (h, w) = self.members, a.shape[-2:]
        return torch.cat([a.reshape(1, g, -1, h, w), b.reshape(1, g, -1, h, w)], dim=2).view(1, -1, h, w)

    def _level(self, index: int, x: Tensor) -> Tensor:
        params = self.levels[index]
        deeper = self._norm_act(F.avg_pool2d(self._conv(x, params, "down1"), 2), params, "down1")
        deeper = self._norm_act(self._conv(deeper, params, "down2"), params, "down2")
        if index + 1 < len(self.levels):
            deeper = self._level(index + 1, deeper)
        deeper = F.interpolate(deeper, scale_factor=2, mode="bilinear", align_corners=False)
        if self.skip_channels[index]:
            skip = self._norm_act(self._conv(x, params, "skip"), params, "skip")
            deeper = self._member_cat(skip, deeper)
        merged = F.instance_norm(
            deeper, weight=params["merge_norm_weight"].flatten(), bias=params["merge_norm_bias"].flatten()
        )
        out = self._norm_act(self._conv(merged, params, "up1"), params, "up1")
        return self._norm_act(self._conv(out, params, "up2"), params, "up2")

    def forward(self) -> Tensor:
        """All members' patches in [0, 1]: ``[G, out_channels, patch_size, patch_size]``."""
        x = self._level(0, self.noise)
        x = self._conv(x, self.head, "to_image")
        x = torch.sigmoid(self._conv(x, self.head, "stride3", zero_pad=True, stride=3))
        size = x.shape[-1]
        start = (size - self.patch_size) // 2
        x = x[..., start : start + self.patch_size, start : start + self.patch_size]
        return x.reshape(self.members, self.out_channels, self.patch_size, self.patch_size)
