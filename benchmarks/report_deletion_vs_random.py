"""Does every method beat the Random control on Deletion? Paired per-image differences with standard errors.

The evaluation callback logs one Deletion AUC per method (a mean over images); whether a small gap to Random is
more than noise needs the per-image pairing, which this report adds. It reads an evaluation config (its methods,
its Deletion settings, its DataModule and ``max_samples``) and a checkpoint:

    .venv/bin/python benchmarks/report_deletion_vs_random.py --config configs/synthetic_eval.yaml --ckpt <best.ckpt>
    .venv/bin/python benchmarks/report_deletion_vs_random.py --config configs/digits_eval.yaml --ckpt <best.ckpt>

Printed per method: mean Deletion AUC (lower = better), the mean per-image difference to Random, its standard
error, and difference / SE (a method beats Random clearly where this is below about −2).
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

import torch
import yaml

from lit_xai.callbacks.explainers import build_explainer
from lit_xai.metrics import Deletion
from lit_xai.metrics.base import pixel_scores
from lit_xai.metrics.baselines import baseline_images
from lit_xai.metrics.perturbation import pixel_ranks, target_outputs
from lit_xai.models.classifier import ClassifierModule


def _callback_args(config: dict[str, Any]) -> dict[str, Any]:
    for callback in config["trainer"]["callbacks"]:
        if callback["class_path"].endswith("AttributionEvaluation"):
            return callback["init_args"]
    raise ValueError("the config has no AttributionEvaluation callback")


def _datamodule(config: dict[str, Any]) -> Any:
    module_name, _, class_name = config["data"]["class_path"].rpartition(".")
    return getattr(importlib.import_module(module_name), class_name)(**config["data"].get("init_args", {}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with open(args.config) as handle:
        config = yaml.safe_load(handle)
    callback = _callback_args(config)
    deletion = next(spec for spec in callback["metrics"] if spec["name"] == "deletion").get("kwargs", {})
    model = ClassifierModule.load_from_checkpoint(args.ckpt, map_location="cpu").net.eval()
    datamodule = _datamodule(config)
    datamodule.setup("test")
    images, labels = [], []
    for batch in datamodule.test_dataloader():
        images.append(batch["image"])
        labels.append(batch["label"])
    inputs = torch.cat(images)[: callback.get("max_samples")]
    target = torch.cat(labels)[: callback.get("max_samples")]
    height, width = inputs.shape[-2:]
    metric = Deletion(**deletion)  # the config's protocol: its step schedule, baseline and channel reduction
    metric.set_data_normalisation(datamodule.mean, datamodule.std)  # the "black" fill is pixel 0 of this data
    metric.prepare(model, (height, width))
    fractions = metric.curve_axis()
    counts = (fractions * height * width).round().long()
    base = baseline_images(inputs, metric.baseline, metric.blur_kernel_size, metric.blur_sigma,
                           data_mean=metric.data_mean, data_std=metric.data_std)
    specs = list(callback["methods"]) + [{"name": "random", "label": "random"}]
    auc: dict[str, torch.Tensor] = {}
    for spec in specs:
        with torch.enable_grad():
            maps = build_explainer(spec)(model, inputs, target).detach()
        scores = pixel_scores(maps, (height, width), metric.channel_reduction)
        with torch.no_grad():
            curves = target_outputs(model, inputs, base, pixel_ranks(scores, "morf"), counts, target, None)
        auc[spec.get("label", spec["name"])] = torch.trapezoid(curves, fractions, dim=1)
    print(f"{args.config}: {inputs.shape[0]} test images, Deletion {deletion or 'defaults'}")
    print(f"{'method':<22}{'AUC':>8}{'Δ vs random':>13}{'SE':>8}{'Δ/SE':>7}")
    for label, values in auc.items():
        difference = values - auc["random"]
        error = difference.std() / difference.numel() ** 0.5
        ratio = difference.mean() / error if error > 0 else float("nan")
        print(f"{label:<22}{values.mean():>8.4f}{difference.mean():>+13.4f}{error:>8.4f}{ratio:>7.1f}")


if __name__ == "__main__":
    main()
