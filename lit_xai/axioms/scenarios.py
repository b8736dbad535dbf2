"""The four scenarios of "Model knows best" (dissertation ch. 7 §3.1-3.3) as data, plus patch placement.

A scenario lists which images it needs (compositions of the reference input ``X`` with some patches), which
patch must drive which class on which image, and which output must stay unchanged when a patch is added
(the independence terms). Class *slots* name the scenario's classes: slot 0 is ``a``, slot 1 is ``b``.

- ``null_feature`` (Eq. 1-2): ``f_a`` drives ``a`` (to a constant softmax, as in the authors' code); ``f_null``
  drives ``b`` while ``Φ_a(X{f_a,f_null}) = Φ_a(X{f_a})`` and ``Φ_a(X{f_null}) = Φ_a(X)``. Explained: ``a`` on
  ``X{f_a,f_null}``.
- ``class_sensitivity_single`` (Eq. 3): ``f_a`` drives ``a`` while ``Φ_b(X{f_a}) = Φ_b(X)``. Explained: ``a`` and
  ``b`` on ``X{f_a}``.
- ``class_sensitivity_double`` (Eq. 4-5): ``f_a`` drives ``a`` and ``Φ_b(X{f_a,f_b}) = Φ_b(X{f_b})``; ``f_b``
  drives ``b`` and ``Φ_a(X{f_a,f_b}) = Φ_a(X{f_a})``. Explained: ``a`` and ``b`` on ``X{f_a,f_b}``.
- ``saturation`` (Eq. 6-7): ``f_a1`` and ``f_a2`` both drive ``a`` (to a constant softmax) and each alone gives the
  output of both together.
  Explained: ``a`` on ``X{f_a1,f_a2}``.

In a composition, patches outside ``trainable`` are detached, so an independence term moves only the patch
whose independence it enforces (the ``min_{f}`` of each equation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Composition:
    """The reference input with ``present`` patches pasted; gradients reach only the ``trainable`` ones."""

    present: tuple[int, ...]
    trainable: tuple[int, ...]


@dataclass(frozen=True)
class Drive:
    """Patch ``patch`` must drive class slot ``slot`` on composition ``image``: maximise its logit, or reach a
    constant softmax (``constant=True``)."""

    patch: int
    slot: int
    image: int
    constant: bool = False


@dataclass(frozen=True)
class Independence:
    """Adding ``patch`` must not change class ``slot``'s logit: ``Φ_slot(image_with) = Φ_slot(image_without)``."""

    patch: int
    slot: int
    image_with: int
    image_without: int


@dataclass(frozen=True)
class Scenario:
    name: str
    num_patches: int
    num_slots: int
    patch_slots: tuple[int, ...]
    compositions: tuple[Composition, ...]
    drives: tuple[Drive, ...]
    independences: tuple[Independence, ...]


def _double_like(
    name: str, patch_slots: tuple[int, int], other_slots: tuple[int, int], num_slots: int, constant: bool
) -> Scenario:
    """Two patches, each independent of the *other* patch's output given that patch (Eq. 4-5, 6-7)."""
    return Scenario(
        name=name,
        num_patches=2,
        num_slots=num_slots,
        patch_slots=patch_slots,
        compositions=(
            Composition((0,), (0,)),
            Composition((1,), (1,)),
            Composition((0, 1), (0,)),
            Composition((0, 1), (1,)),
        ),
        drives=(Drive(0, patch_slots[0], 0, constant), Drive(1, patch_slots[1], 1, constant)),
        independences=(
            Independence(0, other_slots[0], image_with=2, image_without=1),
            Independence(1, other_slots[1], image_with=3, image_without=0),
        ),
    )


SCENARIOS: dict[str, Scenario] = {
    "null_feature": Scenario(
        name="null_feature",
        num_patches=2,  # patch 0 = f_a, patch 1 = f_null
        num_slots=2,
        patch_slots=(0, 1),
        compositions=(
            Composition((), ()),
            Composition((0,), (0,)),
            Composition((1,), (1,)),
            Composition((0, 1), (1,)),
        ),
        drives=(Drive(0, 0, 1, constant=True), Drive(1, 1, 2)),
        independences=(
            Independence(1, 0, image_with=3, image_without=1),
            Independence(1, 0, image_with=2, image_without=0),
        ),
    ),
    "class_sensitivity_single": Scenario(
        name="class_sensitivity_single",
        num_patches=1,
        num_slots=2,
        patch_slots=(0,),
        compositions=(Composition((), ()), Composition((0,), (0,))),
        drives=(Drive(0, 0, 1),),
        independences=(Independence(0, 1, image_with=1, image_without=0),),
    ),
    "class_sensitivity_double": _double_like("class_sensitivity_double", (0, 1), (1, 0), num_slots=2, constant=False),
    # Eq. 6-7 as the text states them: each feature alone reaches a constant output (softmax c), so both together
    # can give the same output; maximising both (the authors' code) rarely meets the stopping criteria. On a
    # network whose last units see only part of the image the two patches must also sit where the same units see
    # both (GenerationConfig.fixed_corners; the authors' code fixes the saturation positions too)
    "saturation": _double_like("saturation", (0, 0), (0, 0), num_slots=1, constant=True),
}


def get_scenario(name: str) -> Scenario:
    if name not in SCENARIOS:
        raise ValueError(f"unknown axiom scenario {name!r}; choose from {', '.join(SCENARIOS)}")
    return SCENARIOS[name]


def explained_patches(scenario: Scenario) -> tuple[int, ...]:
    """The patches present in the image that is explained (all of them)."""
    return tuple(range(scenario.num_patches))


PLACEMENT_UNIFORMS = 7  # uniforms per scene that :func:`place_patches` consumes


def place_patches(uniforms: Tensor, image_size: int, patch_size: int, num_patches: int) -> Tensor:
    """Random non-overlapping top-left corners ``[S, P, 2]`` (row, col) from ``uniforms`` ``[S, 7]`` in [0, 1).

    One patch: anywhere. Two patches (the authors' placer): a random separator splits one axis; the first
    patch lies before it, the second after it, the other coordinate is free; the axis and the order are
    swapped at random.
    """
    span = image_size - patch_size + 1
    if num_patches == 1:
        return (uniforms[:, :2] * span).long().clamp_(max=span - 1)[:, None, :]
    if num_patches != 2:
        raise ValueError(f"place_patches supports 1 or 2 patches, got {num_patches}")
    if image_size < 2 * patch_size + 1:
        raise ValueError(f"two {patch_size}px patches do not fit side by side in a {image_size}px image")
    u = uniforms
    sep = patch_size + (u[:, 0] * (image_size - 2 * patch_size)).long()
    first = (u[:, 1] * (sep - patch_size + 1)).long()
    second = sep + (u[:, 2] * (image_size - patch_size + 1 - sep)).long()
    free = (u[:, 3:5] * span).long().clamp_(max=span - 1)
    corners = torch.stack([torch.stack([first, free[:, 0]], 1), torch.stack([second, free[:, 1]], 1)], 1)
    corners = torch.where((u[:, 5] >= 0.5)[:, None, None], corners.flip(-1), corners)  # swap axes
    return torch.where((u[:, 6] >= 0.5)[:, None, None], corners.flip(1), corners)  # swap order


def patch_masks(corners: Tensor, image_size: int, patch_size: int) -> Tensor:
    """Boolean masks ``[S, P, H, W]`` of the patch footprints for corners ``[S, P, 2]``."""
    grid = torch.arange(image_size, device=corners.device)
    rows = (grid >= corners[..., 0:1]) & (grid < corners[..., 0:1] + patch_size)
    cols = (grid >= corners[..., 1:2]) & (grid < corners[..., 1:2] + patch_size)
    return rows[..., :, None] & cols[..., None, :]


def paste(images: Tensor, patches: Tensor, corners: Tensor) -> Tensor:
    """Paste ``patches`` ``[S, C, p, p]`` into ``images`` ``[S, C, H, W]`` at ``corners`` ``[S, 2]``; differentiable."""
    s, c, h, w = images.shape
    p = patches.shape[-1]
    local_r = torch.arange(h, device=images.device)[None, :] - corners[:, 0:1]
    local_c = torch.arange(w, device=images.device)[None, :] - corners[:, 1:2]
    inside = ((local_r >= 0) & (local_r < p))[:, :, None] & ((local_c >= 0) & (local_c < p))[:, None, :]
    index = local_r.clamp(0, p - 1)[:, :, None] * p + local_c.clamp(0, p - 1)[:, None, :]
    values = patches.flatten(2).gather(2, index.flatten(1)[:, None, :].expand(s, c, -1)).view(s, c, h, w)
    return torch.where(inside[:, None], values, images)


def compose(background: Tensor, patches: Tensor, corners: Tensor, composition: Composition) -> Tensor:
    """``X{present}`` for every scene: ``background`` ``[S, C, H, W]``, ``patches`` ``[S, P, C, p, p]``."""
    image = background
    for k in composition.present:
        patch = patches[:, k] if k in composition.trainable else patches[:, k].detach()
        image = paste(image, patch, corners[:, k])
    return image
