"""Evidence for the seed 000/001 claims on the embedded digits data or synthetic scenes (CPU, a few minutes).

    .venv/bin/python benchmarks/report_pathways.py [--dataset digits] [--epochs 6] [--images 96] [--sanity_images 16]
    .venv/bin/python benchmarks/report_pathways.py --dataset synthetic --weights /tmp/synthetic_best.ckpt \
        --sections lerf
    .venv/bin/python benchmarks/report_pathways.py --dataset synthetic --backbone resnet8 --weights <best ckpt of
        configs/synthetic_fit.yaml + configs/synthetic_resnet8.yaml>
    .venv/bin/python benchmarks/report_pathways.py --dataset synthetic --backbone resnet8 --weights <best ckpt> \
        --config configs/synthetic_fit.yaml configs/synthetic_hard_resnet8.yaml     # the harder scenes

1. Trains ``--backbone`` (default ``digits_cnn``; ``resnet8`` is the paper's CIFAR net) on scikit-learn digits
   upsampled to 32×32 (``--dataset digits``) or on the synthetic shape scenes of ``--config`` (``--dataset
   synthetic``; default ``configs/synthetic_fit.yaml``: 4 classes, RGB) with a plain PyTorch loop (Adam), or loads
   ``--weights`` (a state dict or a Lightning checkpoint such as the one that config saves).
2. LeRF (seed 001 Fig. 7, seed 000 Fig. 4): remove the least relevant 1…10% of pixels (to 0 = the dataset mean in
   normalised space, the paper's protocol; ``--lerf_baseline blur`` / ``mean`` for a check), record the absolute
   fractional change ``|p − p₀| / p₀`` of the explained class's softmax;
   AUC over the removed fraction, divided by 0.1 (= the mean over the schedule; lower = better;
   ``--lerf_max_fraction`` / ``--lerf_steps`` change the schedule). Pixels are ranked
   by ``|map|`` summed over channels; exact ties (sparse pathway maps are 0 on most pixels) are broken by a seeded
   random order, not by pixel index (which would remove the top rows, the background of a digit, first). The
   pathway and pruning methods are evaluated at several sparsities κ, including the κ calibrated to a 15% mean
   output change (seed 000 §4.1), with the off-pathway replacement of ``--replacement`` (paper: constant; the
   authors' code: zero). Controls: ``random`` and ``input_magnitude`` — the model-free map ``|x|`` (summed over
   channels), which ranks the pixels that are already closest to the removal value first; the share of pixels
   with a map of exactly 0 is printed too (above 10%, the LeRF schedule only sees the seeded tie-breaking), and,
   as a diagnostic (not a method of the paper), the LeRF of ``x ⊙ map``: the step from Gradient to InputMCT
   applied to every map, which compares the maps with that input weighting factored out. Then the paired
   per-image differences (``PixelPerturbation.image_scores``) NeuronMCT(*) − InputMCT and NeuronIntGrad(*) −
   InputIntGrad (mean ± standard error, and the share of images where the neuron method is better) at every κ.
3. Cascading parameter randomisation (seed 001 Fig. 6, seed 000 Fig. 3): Spearman rank correlation of the absolute
   maps before/after randomising the layers from the last to the first (PathwayGrad code's protocol: every
   parameter ~ N(0, 0.1)); lower = the map depends on the weights = passes.
4. Pathway analysis (seed 001 Fig. 1): share of originally dead neurons in pathways of each selection method.
``--sections`` picks which of 2–4 to run. Every number is printed as a Markdown table; ``--output`` also writes them
as JSON. The script checks that the model is bitwise unchanged after all methods and analyses.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.nn.functional as F

from configs import load_configs
from lit_xai.attribution import build_method
from lit_xai.attribution.pruning import calibrate_sparsity
from lit_xai.data import DigitsDataModule, SyntheticShapesDataModule
from lit_xai.data.base import ClassificationDataModule
from lit_xai.metrics.perturbation import PixelPerturbation
from lit_xai.metrics.randomisation import ParameterRandomisation
from lit_xai.models.backbones import build_backbone, load_weights
from lit_xai.pathways import PathwayStatistics, select_pathways

BASELINES = ("random", "input_magnitude", "gradient", "guided_backprop", "input_mct", "input_intgrad", "dga")
SPARSE_METHODS = (
    "neuron_mct", "neuron_intgrad", "neuron_conductance", "neuron_mct_star", "neuron_intgrad_star", "prune_grad"
)
SECTIONS = ("lerf", "sanity", "pathways")
SANITY_METHODS = ("gradient", "guided_backprop", "input_mct", "neuron_mct", "neuron_intgrad", "prune_grad")


def build_data(
    dataset: str, backbone: str, seed: int, configs: list[str]
) -> tuple[ClassificationDataModule, torch.nn.Module]:
    """The datamodule and the untrained ``backbone`` for ``dataset`` (synthetic: the scenes of the fit ``configs``)."""
    if dataset == "digits":
        datamodule = DigitsDataModule(batch_size=64, image_size=32, seed=seed)
        model = build_backbone(backbone, num_classes=10, in_chans=1)
    else:
        scene_args = {**load_configs(configs)["data"]["init_args"], "batch_size": 64, "seed": seed}
        datamodule = SyntheticShapesDataModule(**scene_args)
        model = build_backbone(backbone, num_classes=datamodule.num_classes, in_chans=3)
    datamodule.setup()
    return datamodule, model


def train(model: torch.nn.Module, datamodule: ClassificationDataModule, epochs: int, lr: float) -> float:
    """A plain Adam loop over the training split; returns the validation accuracy."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        model.train()
        for batch in datamodule.train_dataloader():
            loss = F.cross_entropy(model(batch["image"]), batch["label"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for batch in datamodule.val_dataloader():
            correct += int((model(batch["image"]).argmax(1) == batch["label"]).sum())
            total += batch["label"].numel()
    return correct / total


def first_images(datamodule: ClassificationDataModule, count: int) -> torch.Tensor:
    images = torch.cat([batch["image"] for batch in datamodule.val_dataloader()])
    return images[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("digits", "synthetic"), default="digits")
    parser.add_argument("--config", nargs="+", default=["configs/synthetic_fit.yaml"],
                        help="--dataset synthetic: the fit config(s) whose scenes to use, merged in order")
    parser.add_argument("--backbone", default="digits_cnn", help="built-in backbone (resnet8: the paper's CIFAR net)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--replacement", choices=("constant", "zero"), default="constant",
                        help="off-pathway neurons of the pathway methods in LeRF")
    parser.add_argument("--lerf_baseline", choices=("zero", "mean", "blur"), default="zero")
    parser.add_argument("--lerf_max_fraction", type=float, default=0.1,
                        help="share of pixels removed at the last LeRF step (seeds 000/001: 0.1)")
    parser.add_argument("--lerf_steps", type=int, default=10, help="LeRF steps up to --lerf_max_fraction")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--images", type=int, default=96, help="validation images for LeRF")
    parser.add_argument("--sanity_images", type=int, default=16)
    parser.add_argument("--pathway_images", type=int, default=16)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.9, 0.95], help="κ values to evaluate")
    parser.add_argument("--sanity_sparsity", type=float, default=0.95, help="κ in the randomisation check")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=str, default=None, help="write the numbers as JSON here")
    parser.add_argument("--weights", type=str, default=None, help="load/save the trained network here (skip training)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    datamodule, model = build_data(args.dataset, args.backbone, args.seed, args.config)
    if args.weights and os.path.exists(args.weights):
        load_weights(model, args.weights)
        accuracy = train(model, datamodule, 0, args.lr)
        print(f"{args.backbone} ({args.dataset}) loaded from {args.weights}: val accuracy {accuracy:.3f}", flush=True)
    else:
        start = time.time()
        accuracy = train(model, datamodule, args.epochs, args.lr)
        seconds = time.time() - start
        print(f"{args.backbone} ({args.dataset}) trained {args.epochs} epochs in {seconds:.0f}s: "
              f"val accuracy {accuracy:.3f}", flush=True)
        if args.weights:
            torch.save(model.state_dict(), args.weights)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calibration = calibrate_sparsity(model, datamodule.val_dataloader(), 0.15, max_batches=2)
    sparsities = list(dict.fromkeys([round(calibration.sparsity, 3), *args.sparsities]))  # calibrated first, no repeats
    print(f"κ calibrated to a 15% mean output change: {calibration.sparsity:.3f}", flush=True)
    results: dict = {"dataset": args.dataset, "val_accuracy": accuracy, "calibrated_sparsity": calibration.sparsity,
                     "replacement": args.replacement, "lerf_baseline": args.lerf_baseline, "lerf_auc": {},
                     "sanity_spearman_abs": {}}
    images = first_images(datamodule, args.images)
    with torch.no_grad():
        target = model(images).argmax(1)
    tie_noise = torch.rand(images.shape[0], 1, *images.shape[-2:], generator=torch.Generator().manual_seed(args.seed))

    lerf_metric = PixelPerturbation(
        order="lerf", baseline=args.lerf_baseline, output="fractional_change", num_steps=args.lerf_steps,
        max_fraction=args.lerf_max_fraction, channel_reduction="sum",
    )

    def lerf(maps: torch.Tensor) -> torch.Tensor:
        """Per-image LeRF score: AUC over [0, max fraction] / max fraction, i.e. the mean |Δp|/p₀ over the schedule."""
        scores = maps.abs().sum(1, keepdim=True)
        scores = scores + 1e-6 * scores.flatten(1).amax(1).clamp_min(1e-30).view(-1, 1, 1, 1) * tie_noise
        return lerf_metric.image_scores(model, images, target, scores) / args.lerf_max_fraction

    def zero_share(maps: torch.Tensor) -> float:
        """Share of pixels whose map is exactly 0: once it exceeds the 10% removed, LeRF only sees tie-breaking."""
        return float((maps.abs().sum(1) == 0).float().mean())

    def maps_of(name: str, **kwargs: float | str) -> torch.Tensor:
        if name == "input_magnitude":
            return images.abs().sum(1, keepdim=True)
        explainer = build_method(name, **kwargs)
        return torch.cat([explainer(model, chunk, t) for chunk, t in zip(images.split(32), target.split(32))])

    if "lerf" in args.sections:
        results["zero_map_pixels"], results["lerf_auc_input_weighted"], results["lerf_paired"] = {}, {}, {}
        percent = f"{100 * args.lerf_max_fraction:g}%"
        print(f"\n| method | κ | LeRF (up to {percent} removed to {args.lerf_baseline}, mean |Δp|/p₀, ↓), "
              f"{args.replacement} replacement | pixels with map = 0 | LeRF of x ⊙ map (diagnostic) |"
              "\n|---|---|---|---|---|", flush=True)
        per_image: dict[str, torch.Tensor] = {}
        for sparsity in [None, *sparsities]:
            for name in BASELINES if sparsity is None else SPARSE_METHODS:
                kwargs: dict = {} if sparsity is None else {"sparsity": sparsity}
                if name.startswith("neuron_"):
                    kwargs["replacement"] = args.replacement
                key = name if sparsity is None else f"{name}@{sparsity}"
                maps = maps_of(name, **kwargs)
                per_image[key] = lerf(maps)
                auc, zeros, weighted = float(per_image[key].mean()), zero_share(maps), float(lerf(images * maps).mean())
                results["lerf_auc"][key], results["zero_map_pixels"][key] = auc, zeros
                results["lerf_auc_input_weighted"][key] = weighted
                print(f"| {name} | {'–' if sparsity is None else sparsity} | {auc:.4f} | {100 * zeros:.1f}% "
                      f"| {weighted:.4f} |", flush=True)
        print("\n| paired per-image LeRF difference (↓ = the neuron method is better) | κ | mean ± SE | "
              "images where it is better |\n|---|---|---|---|")
        pairs = (("neuron_mct", "input_mct"), ("neuron_intgrad", "input_intgrad"),
                 ("neuron_mct_star", "input_mct"), ("neuron_intgrad_star", "input_intgrad"))
        for sparsity in sparsities:
            for neuron, counterpart in pairs:
                difference = per_image[f"{neuron}@{sparsity}"] - per_image[counterpart]
                mean, se = float(difference.mean()), float(difference.std() / difference.numel() ** 0.5)
                better = float((difference < 0).float().mean())
                results["lerf_paired"][f"{neuron}@{sparsity}-{counterpart}"] = {"mean": mean, "se": se,
                                                                               "better_share": better}
                print(f"| {neuron} − {counterpart} | {sparsity} | {mean:+.4f} ± {se:.4f} | {100 * better:.0f}% |",
                      flush=True)

    def method(name: str):  # noqa: ANN202
        kwargs = {"sparsity": args.sanity_sparsity} if name.startswith(("neuron_", "prune_")) else {}
        return build_method(name, **kwargs)

    if "sanity" in args.sections:
        sanity_images = images[: args.sanity_images]
        print(f"\n| method (κ = {args.sanity_sparsity}) | Spearman(|map|) fully randomised (↓) | "
              "mean over cascade (↓) |\n|---|---|---|", flush=True)
        for name in SANITY_METHODS:
            explainer = method(name)
            metric = ParameterRandomisation(protocol="normal_all", score="spearman_abs")
            maps = explainer(model, sanity_images, target[: args.sanity_images])
            metric.update(model, sanity_images, target[: args.sanity_images], maps, method=explainer)
            value = metric.compute()
            curve = value["curve/spearman_abs"]
            results["sanity_spearman_abs"][name] = {"final": float(curve[-1]), "mean": float(value["score"]),
                                                    "curve": [float(v) for v in curve]}
            print(f"| {name} | {float(curve[-1]):.3f} | {float(value['score']):.3f} |", flush=True)

    if "pathways" in args.sections:
        statistics = PathwayStatistics(reference="neuron_intgrad")
        statistics.update(select_pathways(model, images[: args.pathway_images], sparsity=0.9))
        summary = statistics.summary()
        results["pathways"] = summary
        print("\n| pathway method (κ = 0.9) | originally dead neurons in pathway |\n|---|---|", flush=True)
        for name, share in summary["dead_share"].items():
            print(f"| {name} | {100 * share:.1f}% |", flush=True)

    unchanged = all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    results["model_unchanged"] = unchanged
    print(f"\nmodel bitwise unchanged after all methods and analyses: {unchanged}", flush=True)
    if args.output:
        with open(args.output, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
