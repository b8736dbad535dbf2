"""Time an evaluation config's callback work against a variant with other metric settings (benchmarks/harness.py).

    .venv/bin/python benchmarks/bench_eval_configs.py --config configs/digits_eval.yaml --ckpt <best.ckpt> \
        --variant '{"deletion": {"pixels_per_step": 16}, "insertion": {"pixels_per_step": 16},
                    "sensitivity_n": {"num_n": 8, "num_masks": 32}}'

One case = what the AttributionEvaluation callback does on one batch (every method's maps and every metric update,
``evaluate_batch``) on the first ``--images`` test images; the variant is the same config with the metric kwargs
(by metric label) replaced. Warm-up on both sides, rotated interleaving, paired per-round ratio variant / config.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch
import yaml
from harness import interleaved_times, machine_state, paired_ratio

import lit_xai.data as data_modules
from lit_xai.callbacks import AttributionEvaluation
from lit_xai.models import ClassifierModule


def build_callback(config: dict[str, Any], overrides: dict[str, dict[str, Any]]) -> AttributionEvaluation:
    """The config's (last) AttributionEvaluation callback, metric kwargs replaced by label."""
    init = dict(config["trainer"]["callbacks"][-1]["init_args"])
    metrics = []
    for spec in init["metrics"]:
        label = spec.get("label", spec["name"])
        metrics.append({**spec, "kwargs": {**spec.get("kwargs", {}), **overrides.get(label, {})}})
    callback = AttributionEvaluation(**{**init, "metrics": metrics, "progress_bar": False, "print_summary": False,
                                        "num_grid_samples": 0, "num_table_samples": 0})
    callback._rates = {e.label: [0.0, 0.0] for e in callback.explainers}  # what the callback's _start sets up
    return callback


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--variant", required=True, help="JSON: metric label → kwargs replacing the config's")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = yaml.safe_load(open(args.config))
    model = ClassifierModule.load_from_checkpoint(args.ckpt, map_location="cpu").eval()
    data_class = getattr(data_modules, config["data"]["class_path"].rsplit(".", 1)[-1])
    datamodule = data_class(**{**config["data"]["init_args"], "batch_size": args.images})
    datamodule.setup("test")
    batch = next(iter(datamodule.test_dataloader()))
    callbacks = {"config": build_callback(config, {}), "variant": build_callback(config, json.loads(args.variant))}
    for callback in callbacks.values():
        for group in callback.metrics.values():
            for metric in group.values():
                if callable(getattr(metric, "set_data_normalisation", None)):
                    metric.set_data_normalisation(datamodule.mean, datamodule.std)
    cases = {name: (lambda cb=cb: cb.evaluate_batch(model, batch)) for name, cb in callbacks.items()}
    times = interleaved_times(cases, rounds=args.rounds)
    ratio = paired_ratio(times["variant"], times["config"])
    print(machine_state())
    for name, values in times.items():
        print(f"{name}: per-round seconds {[round(v, 2) for v in values]} ({args.images} images)")
    print(f"variant / config: {ratio}")


if __name__ == "__main__":
    main()
