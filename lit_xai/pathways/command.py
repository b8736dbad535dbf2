"""``python -m lit_xai pathways``: critical-pathway analysis of a trained model (seed 001 §3.4).

Selects pathways of sparsity κ for validation images with NeuronMCT, NeuronIntGrad, pathological greedy
pruning (Alg. 1) and Distillation Guided Routing (init 1 and random), then writes to ``output_dir``:
``summary.json`` (dead-neuron shares, Jaccard overlaps network-wide and per layer), ``dead_share.png`` (Fig. 1)
and ``overlap.png`` (Fig. 2); with ``--wandb true`` both figures and the numbers are also logged to an (offline
by default) W&B run under ``output_dir`` (default: the run folder ``runs/pathways/<name>``). Without
``--model.weights`` the network can be trained first for ``--model.train_epochs`` epochs on the digits training
split (a pathway analysis of a random network is meaningless, so one of the two is required).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from jsonargparse import ActionConfigFile, ArgumentParser
from torch import nn
from tqdm import tqdm

from lit_xai.loggers import DEFAULT_RUN_NAME, run_folder
from lit_xai.models.backbones import build_backbone
from lit_xai.pathways.analysis import SELECTION_METHODS, PathwayStatistics, select_pathways
from lit_xai.pathways.plots import dead_share_figure, overlap_figure
from lit_xai.pathways.routing import ROUTING_MAX_ROUNDS, ROUTING_STEPS


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m lit_xai pathways", description=__doc__.splitlines()[0])
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_argument("--model.backbone", type=str, default="digits_cnn", help="backbone name (build_backbone)")
    parser.add_argument("--model.num_classes", type=int, default=10)
    parser.add_argument("--model.in_chans", type=int, default=1)
    parser.add_argument("--model.weights", type=str | None, default=None, help="state_dict or Lightning checkpoint")
    parser.add_argument("--model.train_epochs", type=int, default=0, help="train first when no weights are given")
    parser.add_argument("--model.train_batch_size", type=int, default=64, help="batch size of that training")
    parser.add_argument("--data.batch_size", type=int, default=8)
    parser.add_argument("--data.image_size", type=int, default=32)
    parser.add_argument("--data.seed", type=int, default=0)
    parser.add_argument("--data.num_samples", type=int, default=32, help="validation images analysed")
    parser.add_argument("--sparsity", type=float, default=0.9, help="κ, the fraction of neurons off the pathway")
    parser.add_argument("--methods", type=list[str], default=list(SELECTION_METHODS))
    parser.add_argument("--intgrad_steps", type=int, default=11)
    parser.add_argument("--greedy_step_fraction", type=float, default=0.01)
    parser.add_argument("--routing_steps", type=int, default=ROUTING_STEPS, help="DGR steps per round (authors: 1000)")
    parser.add_argument("--routing_l1_weight", type=float, default=0.01, help="DGR γ (authors: 0.01)")
    parser.add_argument(
        "--routing_max_rounds", type=int, default=ROUTING_MAX_ROUNDS, help="DGR γ/10 retry rounds (authors: 100)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", type=str, default=DEFAULT_RUN_NAME,
                        help="run name: the run folder is runs/pathways/<name>")
    parser.add_argument("--output_dir", type=str | None, default=None,
                        help="summary, figures and the W&B run (default: the run folder runs/pathways/<name>)")
    parser.add_argument("--wandb", type=bool, default=False, help="also log figures and numbers to W&B")
    parser.add_argument("--wandb_project", type=str, default="lit_xai")
    return parser


def trained_model(cfg: Any, data: Any) -> nn.Module:
    """The backbone with ``weights``, or trained for ``train_epochs`` on the digits training split (Lightning)."""
    if cfg.weights is not None:
        return build_backbone(cfg.backbone, num_classes=cfg.num_classes, in_chans=cfg.in_chans, weights=cfg.weights)
    if cfg.train_epochs <= 0:
        raise ValueError("pathways: give --model.weights <checkpoint> or --model.train_epochs > 0")
    import lightning as L

    from lit_xai.models.classifier import ClassifierModule

    module = ClassifierModule(backbone=cfg.backbone, num_classes=cfg.num_classes, in_chans=cfg.in_chans)
    trainer = L.Trainer(
        max_epochs=cfg.train_epochs, logger=False, enable_checkpointing=False, enable_model_summary=False
    )
    from lit_xai.data import DigitsDataModule

    datamodule = DigitsDataModule(batch_size=cfg.train_batch_size, image_size=data.image_size, seed=data.seed)
    trainer.fit(module, datamodule=datamodule)
    return module.net


def run_analysis(
    model: nn.Module, loader: Any, num_samples: int, selection_kwargs: dict, device: torch.device
) -> dict:
    """Accumulate :class:`PathwayStatistics` over the first ``num_samples`` images of ``loader``."""
    statistics = PathwayStatistics()
    seen = 0
    with tqdm(total=num_samples, desc="pathways") as progress:
        for batch in loader:
            images = batch["image"][: num_samples - seen].to(device)
            statistics.update(select_pathways(model, images, **selection_kwargs))
            seen += images.shape[0]
            progress.update(images.shape[0])
            if seen >= num_samples:
                break
    return statistics.summary()


def main(args: list[str] | None = None) -> None:
    cfg = build_parser().parse_args(args)
    unknown = [m for m in cfg.methods if m not in SELECTION_METHODS]
    if unknown:  # before any training: a typo must not cost a training run
        from lit_xai.models.classifier import ConfigurationError

        raise ConfigurationError(f"pathways --methods: unknown {unknown}; available: {', '.join(SELECTION_METHODS)}")
    from lit_xai.data import DigitsDataModule

    torch.manual_seed(cfg.seed)
    datamodule = DigitsDataModule(batch_size=cfg.data.batch_size, image_size=cfg.data.image_size, seed=cfg.data.seed)
    datamodule.setup()
    model = trained_model(cfg.model, cfg.data)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device).eval()
    selection_kwargs = {
        "sparsity": cfg.sparsity,
        "methods": cfg.methods,
        "intgrad_steps": cfg.intgrad_steps,
        "greedy_step_fraction": cfg.greedy_step_fraction,
        "routing_steps": cfg.routing_steps,
        "routing_l1_weight": cfg.routing_l1_weight,
        "routing_max_rounds": cfg.routing_max_rounds,
        "seed": cfg.seed,
    }
    summary = run_analysis(model, datamodule.val_dataloader(), cfg.data.num_samples, selection_kwargs, device)
    summary["sparsity"] = cfg.sparsity
    out = Path(cfg.output_dir or run_folder("pathways", cfg.name))
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    figures = {"dead_share": dead_share_figure(summary), "overlap": overlap_figure(summary)}
    for name, figure in figures.items():
        figure.savefig(out / f"{name}.png", dpi=120)
    if cfg.wandb:
        from lit_xai.loggers import LitXaiWandbLogger

        logger = LitXaiWandbLogger(project=cfg.wandb_project, name=cfg.name, save_dir=str(out))
        logger.log_metrics({f"pathways/dead_share/{k}": v for k, v in summary["dead_share"].items()})
        for name in figures:
            logger.log_image(key=f"pathways/{name}", images=[str(out / f"{name}.png")])
        logger.experiment.finish()
    print(f"[lit_xai] pathway analysis of {summary['samples']} images: {out}/summary.json, dead_share.png, overlap.png")
    for name, share in summary["dead_share"].items():
        print(f"[lit_xai]   {name:<16} originally dead in pathway: {100 * share:5.1f}%")
