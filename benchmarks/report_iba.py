"""Evidence for the information-bottleneck methods on the model trained on the synthetic ground-truth scenes.

    .venv/bin/python benchmarks/report_iba.py --ckpt runs/<...>/checkpoints/best-*.ckpt   # ~25 min on one busy core
    .venv/bin/python benchmarks/report_iba.py --images 8 --gan-epochs 2                   # quick smoke run
    .venv/bin/python benchmarks/report_iba.py --config configs/synthetic_fit.yaml configs/synthetic_resnet8.yaml \
        --ckpt <its best checkpoint> --layer layer2 --sweep-layers layer1 layer2 layer3   # ResNet-8

1. The model: ``digits_cnn`` as trained by ``python -m lit_xai fit --config configs/synthetic_fit.yaml`` — pass its
   best checkpoint with ``--ckpt``; without one the same recipe (the config's model and data arguments, its epochs)
   is trained here with a Lightning Trainer and cached under ``--cache``. The scenes come from the config's
   ``SyntheticShapesDataModule`` arguments (several ``--config`` files are merged in order, as the CLI does).
2. Explains the first ``--images`` correctly classified test images (target = label) with Gradient (max-abs over
   channels, as in ``configs/synthetic_eval.yaml``), Integrated Gradients, IBA, Inverse IBA and InputIBA (paper
   defaults; IBA layers at ``--layer``) and scores them per image:
   - Deletion (Petsiuk; reference.md §4): most relevant pixels first, 10 per step, to 0 in normalised space (the
     dataset mean); AUC of the target softmax, lower = better. Ties are broken by pixel index; the table reports
     the share of tied pixel scores per method, so a coarse map's handicap is visible.
   - Deletion, blur: the same with removed pixels taken from a blurred copy (kernel 29, σ 15); Deletion, black:
     removed pixels set to black (0 before normalisation), the dissertation's App. D.3 protocol.
   - Deletion, 2×2 tiles: maps average-pooled over 2×2 tiles (one IBA cell at a 16×16 layer) and removed tile by
     tile, as in the IBA paper's degradation test (8×8 tiles at 224²); 4 pixels = 1 tile per step.
   - Insertion (blurred canvas, 10 pixels per step), higher = better; EHR against the box, higher = better.
   Then paired per-image differences (mean ± standard error) of IBA / InputIBA against Gradient and IG, and an
   IBA layer sweep (every ReLU output of digits_cnn) so the choice of layer is visible, not hidden.
   The maps are cached per chunk of ``--chunk`` images under ``--cache``/maps (keyed by the weights, the method and
   its arguments, and the chunk's test-set indices; written atomically), so a crashed run resumes where it stopped.
   The key also covers the source of ``lit_xai/attribution`` (a changed method or default computes new maps).
   ``--shard i/n`` only computes chunks ``c`` with ``c % n == i`` and exits: run the n shards in parallel (one
   thread each), then once without ``--shard`` to score everything from the cache.
3. Two class-objects of the same class per image: the share of each map's mass inside each object's mask, for IBA
   and Inverse IBA at each ``--two-object-betas`` × ``--two-object-steps`` setting (Inverse IBA should put mass on
   both objects where IBA may keep only one sufficient object; a larger β or more steps let IBA keep less).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn

from configs import load_configs
from lit_xai.attribution import build_method
from lit_xai.attribution.postprocess import reduce_channels
from lit_xai.data import SyntheticShapesDataModule
from lit_xai.data.synthetic import Scenes
from lit_xai.metrics.base import pixel_scores, trapezoid_auc
from lit_xai.metrics.baselines import baseline_images
from lit_xai.metrics.localisation import EffectiveHeatRatio
from lit_xai.metrics.perturbation import pixel_ranks, step_counts, target_outputs
from lit_xai.models.classifier import ClassifierModule
from lit_xai.storage import atomic_torch_save, load_or_discard, weights_fingerprint

SECTIONS = ("scores", "sweep", "two_objects")
SWEEP_LAYERS = ("features.2", "features.6", "features.10")  # the ReLU outputs of digits_cnn: 32², 16², 8²


def trained_model(args: argparse.Namespace, config: dict, datamodule: SyntheticShapesDataModule) -> nn.Module:
    """The checkpoint's network, or the config's recipe trained here (cached by the config's hash)."""
    if args.ckpt:
        return ClassifierModule.load_from_checkpoint(args.ckpt, map_location="cpu").net.eval()
    import lightning as L

    model_args = dict(config["model"])
    epochs = int(config["trainer"].get("max_epochs", 10))
    key = hashlib.sha256(yaml.safe_dump([model_args, config["data"], epochs]).encode()).hexdigest()[:12]
    path = Path(args.cache) / f"synthetic_fit-{key}.pt"
    module = ClassifierModule(**model_args, max_epochs=epochs)
    if path.is_file():
        module.net.load_state_dict(torch.load(path, weights_only=True))
        return module.net.eval()
    print(f"no --ckpt: training {model_args['backbone']} as in {args.config} ({epochs} epochs)", flush=True)
    L.seed_everything(int(config.get("seed_everything", 0)))
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False,
                        accelerator="cpu", devices=1)
    trainer.fit(module, datamodule=datamodule)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(module.net.state_dict(), path)
    return module.net.eval()


def tiles(maps: Tensor, size: tuple[int, int], tile: int) -> Tensor:
    """Per-pixel scores averaged over ``tile``×``tile`` tiles (every pixel of a tile gets the tile's mean)."""
    scores = pixel_scores(maps, size, "abs_sum").view(-1, 1, *size)
    return F.interpolate(F.avg_pool2d(scores, tile), scale_factor=tile, mode="nearest")


def curve_aucs(
    model: nn.Module, x: Tensor, y: Tensor, maps: Tensor, mode: str, baseline: str | Tensor, per_step: int
) -> Tensor:
    """Per-image AUC of the target softmax while switching pixels in MoRF order (``remove``: x → baseline, a kind
    of ``baseline_images`` or a fill image; ``insert``: blurred canvas → x), ``per_step`` pixels per step, over the
    full fraction [0, 1]."""
    size = (x.shape[-2], x.shape[-1])
    ranks = pixel_ranks(pixel_scores(maps, size, "abs_sum"), "morf")
    counts = step_counts(size[0] * size[1], per_step, None, 1.0)
    base = baseline.expand_as(x) if isinstance(baseline, Tensor) else baseline_images(x, baseline)
    start, end = (x, base) if mode == "remove" else (base, x)
    with torch.no_grad():
        curves = target_outputs(model, start, end, ranks, counts, y, max_batch=512)
    return trapezoid_auc(curves, counts.float() / counts[-1])


def tie_share(maps: Tensor, size: tuple[int, int]) -> float:
    """Mean share of pixels whose score equals another pixel's score in the same image (ranked by index)."""
    scores = pixel_scores(maps, size, "abs_sum")
    return float(sum(1 - torch.unique(row).numel() / row.numel() for row in scores) / scores.shape[0])


def score_maps(
    model: nn.Module, x: Tensor, y: Tensor, boxes: Tensor, maps: Tensor, black: Tensor
) -> dict[str, Tensor | float]:
    size = (x.shape[-2], x.shape[-1])
    ehr = EffectiveHeatRatio(normalize="max", channel_reduction="abs_sum")  # raw maps: per-image max (as before)
    ehr.update(model, x, y, maps, boxes=boxes)
    return {
        "deletion": curve_aucs(model, x, y, maps, "remove", "zero", 10),
        "deletion_blur": curve_aucs(model, x, y, maps, "remove", "blur", 10),
        "deletion_black": curve_aucs(model, x, y, maps, "remove", black, 10),
        "deletion_tiles": curve_aucs(model, x, y, tiles(maps, size, 2), "remove", "zero", 4),
        "insertion": curve_aucs(model, x, y, maps, "insert", "blur", 10),
        "ehr": float(ehr.compute()["score"]),
        "ties": tie_share(maps, size),
    }


def two_object_scenes(scenes: Scenes, count: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Paste a second class object of the same class (from another scene) where it does not touch the first."""
    images, masks_a, masks_b, labels = [], [], [], []
    n = scenes.images.shape[0]
    for i in range(n):
        for j in range(n):
            if j == i or scenes.labels[j] != scenes.labels[i]:
                continue
            grown = F.max_pool2d(scenes.masks[i].float()[None], 5, 1, 2)[0].bool()
            if bool((grown & scenes.masks[j]).any()):
                continue
            images.append(torch.where(scenes.masks[j], scenes.images[j], scenes.images[i]))
            masks_a.append(scenes.masks[i])
            masks_b.append(scenes.masks[j])
            labels.append(scenes.labels[i])
            break
        if len(images) == count:
            break
    return torch.stack(images), torch.stack(masks_a), torch.stack(masks_b), torch.stack(labels)


def attribution_code_fingerprint() -> str:
    """SHA-256 (16 hex digits) of the attribution package's source: cached maps never outlive a code change."""
    import lit_xai.attribution

    digest = hashlib.sha256()
    for path in sorted(Path(lit_xai.attribution.__file__).parent.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class ChunkedMaps:
    """Maps of one method computed chunk by chunk and cached on disk (see the module docstring, ``--shard``)."""

    def __init__(self, model: nn.Module, x: Tensor, y: Tensor, indices: Tensor, cache: Path, chunk: int,
                 shard: tuple[int, int]) -> None:
        self.model, self.x, self.y, self.indices, self.shard = model, x, y, indices, shard
        self.chunk = chunk if chunk > 0 else max(1, x.shape[0])
        self.cache, self.fingerprint = cache, weights_fingerprint(model) + attribution_code_fingerprint()

    def __call__(self, key: dict, make_method: Callable[[], Callable[[nn.Module, Tensor, Tensor], Tensor]],
                 post: Callable[[Tensor], Tensor]) -> tuple[Tensor, float] | None:
        """All maps and the mean seconds per image (method construction and fitting not timed), or ``None`` if
        chunks of other shards are still missing. ``make_method`` is called only if a chunk must be computed."""
        maps, seconds, complete, method = [], 0.0, True, None
        for number, start in enumerate(range(0, self.x.shape[0], self.chunk)):
            part = slice(start, start + self.chunk)
            name = json.dumps([self.fingerprint, key, self.indices[part].tolist()], sort_keys=True)
            path = self.cache / f"{hashlib.sha256(name.encode()).hexdigest()[:24]}.pt"
            entry = load_or_discard(path)  # a corrupt chunk is reported, deleted and recomputed
            if entry is None and number % self.shard[1] != self.shard[0]:
                complete = False
                continue
            if entry is None:
                method = method or make_method()
                t0 = time.perf_counter()
                entry = {"maps": post(method(self.model, self.x[part], self.y[part])).detach(),
                         "seconds": time.perf_counter() - t0}
                atomic_torch_save(entry, path)
            maps.append(entry["maps"])
            seconds += entry["seconds"]
        return (torch.cat(maps), seconds / self.x.shape[0]) if complete else None


def mean_se(values: Tensor) -> str:
    return f"{float(values.mean()):+.3f} ± {float(values.std() / math.sqrt(values.numel())):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", nargs="+", default=["configs/synthetic_fit.yaml"],
                        help="the fit config(s), merged in order (e.g. synthetic_fit.yaml synthetic_resnet8.yaml)")
    parser.add_argument("--ckpt", default=None, help="best checkpoint of the config's fit run")
    parser.add_argument("--images", type=int, default=32, help="explained test images (InputIBA is the cost)")
    parser.add_argument("--layer", default="features.6", help="IBA / Inverse IBA / InputIBA layer (16×16)")
    parser.add_argument("--sweep-layers", nargs="+", default=list(SWEEP_LAYERS),
                        help="IBA layer sweep (default: digits_cnn's ReLU outputs; resnet8: layer1 layer2 layer3)")
    parser.add_argument("--input-iba", action=argparse.BooleanOptionalAction, default=True,
                        help="include InputIBA (the slow part: ~40 s/image for digits_cnn on one CPU thread)")
    parser.add_argument("--gan-epochs", type=int, default=20)
    parser.add_argument("--two-object-images", type=int, default=32)
    parser.add_argument("--two-object-betas", type=float, nargs="+", default=[10.0],
                        help="β values for IBA and Inverse IBA in the two-object test (10 = the paper's default)")
    parser.add_argument("--two-object-steps", type=int, nargs="+", default=[10],
                        help="optimisation steps in the two-object test (10 = the paper's default)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="scores: Deletion/Insertion/EHR table; sweep: IBA layer sweep; two_objects: section 3")
    parser.add_argument("--cache", default=".cache/report_iba")
    parser.add_argument("--chunk", type=int, default=0,
                        help="images per cached chunk of maps (0: all images in one batch, as timed before)")
    parser.add_argument("--shard", default="0/1",
                        help="i/n: compute the scores section's chunks c with c %% n == i, then exit")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids oversubscription)")
    args = parser.parse_args()
    shard = tuple(int(v) for v in args.shard.split("/"))
    if len(shard) != 2 or not 0 <= shard[0] < shard[1]:
        parser.error(f"--shard must be i/n with 0 ≤ i < n, got {args.shard!r}")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    config = load_configs(args.config)
    datamodule = SyntheticShapesDataModule(**config["data"]["init_args"])
    model = trained_model(args, config, datamodule)
    test, train = datamodule.scenes("test"), datamodule.scenes("train")
    x_all = datamodule.normalize(test.images)
    with torch.no_grad():
        correct = model(x_all).argmax(1) == test.labels
        empty = datamodule.scenes("test", include_object=False)
        chance = (model(datamodule.normalize(empty.images)).argmax(1) == empty.labels).float().mean()
    print(f"model: test accuracy {float(correct.float().mean()):.3f}; the same scenes without the class object: "
          f"{float(chance):.3f} (chance {1 / datamodule.num_classes:.2f})")
    chosen = correct.nonzero().squeeze(1)[: args.images]
    x, y, boxes = x_all[chosen], test.labels[chosen], test.boxes[chosen]
    black = datamodule.normalize(torch.zeros_like(test.images[:1]))  # the dissertation's Deletion fill (App. D.3)
    loader = [{"image": datamodule.normalize(train.images[i : i + 400])} for i in range(0, train.images.shape[0], 400)]

    def bottleneck(name: str, **kwargs: object) -> object:
        """An IBA-family method with its feature statistics; they are estimated once per layer and read back from
        ``--cache`` by every later build (the method's own cache, keyed by weights, layer and sample count)."""
        return build_method(name, cache_dir=Path(args.cache) / "statistics", **kwargs).fit(model, loader)

    if "scores" in args.sections:
        max_abs = lambda maps: reduce_channels(maps, "max_abs")
        identity = lambda maps: maps
        specs: dict[str, tuple[str, dict, Callable[[Tensor], Tensor]]] = {
            "Gradient (max-abs)": ("gradient", {}, max_abs),
            "Integrated Gradients": ("integrated_gradients", {}, identity),
            "IBA": ("iba", {"layer": args.layer}, identity),
            "Inverse IBA": ("inverse_iba", {"layer": args.layer}, identity),
        }
        if args.input_iba:
            specs["InputIBA"] = ("input_iba", {"layer": args.layer, "gan_epochs": args.gan_epochs}, identity)
        chunked = ChunkedMaps(model, x, y, chosen, Path(args.cache) / "maps", args.chunk, shard)
        computed = {}
        for name, (kind, kwargs, post) in specs.items():
            make = (lambda kind=kind, kwargs=kwargs: bottleneck(kind, **kwargs)) if kind.endswith("iba") else (
                lambda kind=kind: build_method(kind))
            computed[name] = chunked({"method": kind, **kwargs, "post": name}, make, post)
        if shard != (0, 1):
            done = [name for name, value in computed.items() if value is not None]
            print(f"shard {args.shard}: chunks computed and cached; complete methods: {done or 'none yet'}")
            return
        print(f"\n{x.shape[0]} correctly classified test images, target = label; layer {args.layer!r}")
        header = ["Deletion ↓", "Del. blur ↓", "Del. black ↓", "Del. 2×2 ↓", "Insertion ↑", "EHR ↑", "ties", "s/image"]
        print(f"{'method':<22}{'map':<14}" + "".join(f"{h:>13}" for h in header))
        results = {}
        for name, (maps, seconds) in computed.items():
            r = results[name] = score_maps(model, x, y, boxes, maps, black)
            values = [float(r[k].mean()) if isinstance(r[k], Tensor) else r[k] for k in
                      ("deletion", "deletion_blur", "deletion_black", "deletion_tiles", "insertion", "ehr", "ties")]
            print(f"{name:<22}{str(tuple(maps.shape[1:])):<14}" + "".join(f"{v:13.3f}" for v in values)
                  + f"{seconds:13.2f}", flush=True)

        print("\npaired per-image differences (method − reference), mean ± SE; negative = better on Deletion")
        for name in [m for m in ("IBA", "InputIBA") if m in computed]:
            for reference in ("Gradient (max-abs)", "Integrated Gradients"):
                cells = "   ".join(f"{k}: {mean_se(results[name][k] - results[reference][k])}"
                                   for k in ("deletion", "deletion_blur", "deletion_black", "deletion_tiles"))
                print(f"  {name:<9} − {reference:<21} {cells}")

    if "sweep" in args.sections:
        print("\nIBA layer sweep (same images, same defaults): Deletion ↓ / Del. 2×2 ↓ / Insertion ↑ / EHR ↑")
        for layer in args.sweep_layers:
            r = score_maps(model, x, y, boxes, bottleneck("iba", layer=layer)(model, x, y), black)
            print(f"  {layer:<12} {float(r['deletion'].mean()):.3f} / {float(r['deletion_tiles'].mean()):.3f} / "
                  f"{float(r['insertion'].mean()):.3f} / {r['ehr']:.3f}", flush=True)

    if "two_objects" in args.sections:
        pool = datamodule.scenes("val")
        images, mask_a, mask_b, labels = two_object_scenes(pool, args.two_object_images)
        x2 = datamodule.normalize(images)
        with torch.no_grad():
            keep = model(x2).argmax(1) == labels
        x2, mask_a, mask_b, labels = x2[keep], mask_a[keep].float(), mask_b[keep].float(), labels[keep]
        print(f"\ntwo class-objects of the same class per image ({int(keep.sum())} correctly classified val scenes): "
              "share of the map's mass (bilinear to 32², ≥ 0) inside each object's mask")
        print(f"{'method':<28}{'stronger obj.':>15}{'weaker obj.':>13}{'weaker/(both)':>15}{'both ≥ 25% of both':>21}")
        balances: dict[str, Tensor] = {}
        settings = itertools.product(args.two_object_betas, args.two_object_steps, ("iba", "inverse_iba"))
        for beta, steps, name in settings:
            maps = bottleneck(name, layer=args.layer, beta=beta, steps=steps)(model, x2, labels)
            mass = pixel_scores(maps, (32, 32), "abs_sum").view_as(mask_a)
            total = mass.sum((1, 2, 3)).clamp_min(1e-12)
            share_a, share_b = (mass * mask_a).sum((1, 2, 3)) / total, (mass * mask_b).sum((1, 2, 3)) / total
            stronger, weaker = torch.maximum(share_a, share_b), torch.minimum(share_a, share_b)
            balance = weaker / (share_a + share_b).clamp_min(1e-12)
            label = f"{'IBA' if name == 'iba' else 'Inverse IBA'}, β={beta:g}, {steps} st."
            print(f"{label:<28}{float(stronger.mean()):15.3f}{float(weaker.mean()):13.3f}{float(balance.mean()):15.3f}"
                  f"{float((balance >= 0.25).float().mean()):21.3f}")
            balances[name] = balance
            if name == "inverse_iba":
                print(f"{'':<4}paired weaker/(both), Inverse IBA − IBA: {mean_se(balance - balances['iba'])}")
    print(f"\ntotal time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
