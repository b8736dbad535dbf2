"""``python -m lit_xai roar --config configs/roar_<...>.yaml [--stage ...] [--shard i/n]``.

Stages: ``source`` (train/cache the model whose maps are used), ``maps`` (attribution maps for train/val/test,
cached), ``train`` (retrain this shard's grid cells), ``merge`` (summary from all shards' manifests), ``all``
(every stage in order, the default). Rerunning the same command resumes: finished cells and map shards are
skipped. See ``docs/roar.md``.
"""

from __future__ import annotations

from typing import Literal

from jsonargparse import ActionConfigFile, ArgumentParser, lazy_instance
from lightning import Trainer
from lightning.pytorch.utilities import rank_zero_only

from lit_xai.data.base import ClassificationDataModule
from lit_xai.data.digits import DigitsDataModule
from lit_xai.loggers import DEFAULT_RUN_NAME, run_folder
from lit_xai.models.classifier import ClassifierModule
from lit_xai.roar.grid import parse_shard
from lit_xai.roar.map_cache import MethodSpec
from lit_xai.roar.pipeline import RemovalOptions, RoarPipeline

#: set per run by the pipeline, so not configurable
TRAINER_SKIP = {"logger", "callbacks", "default_root_dir", "enable_checkpointing"}


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m lit_xai roar", description=__doc__.split("\n\n")[0], env_prefix="ROAR")
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML config (configs/roar_*.yaml)")
    parser.add_argument("--stage", type=Literal["source", "maps", "train", "merge", "all"], default="all",
                        help="which stage to run; 'all' runs source, maps, train and merge in order")
    parser.add_argument("--shard", type=str, default="0/1",
                        help="grid shard 'i/n' (cell c runs in shard c %% n) or 'slurm' (from the array task id)")
    parser.add_argument("--name", type=str, default=DEFAULT_RUN_NAME,
                        help="run name: the run folder is runs/roar/<name> (rerun the same name to resume)")
    parser.add_argument("--output_dir", type=str | None, default=None,
                        help="source model, maps, cells, manifests (default: the run folder runs/roar/<name>)")
    parser.add_subclass_arguments(ClassificationDataModule, "data", default=lazy_instance(DigitsDataModule))
    parser.add_class_arguments(ClassifierModule, "model", instantiate=False)
    parser.add_class_arguments(Trainer, "trainer", skip=TRAINER_SKIP, instantiate=False)
    parser.add_argument("--methods", type=list[MethodSpec], default=[MethodSpec("random"), MethodSpec("gradient")],
                        help="attribution methods: [{name, kwargs, reduction (abs_sum|sum), label}]; random is "
                        "always added")
    parser.add_argument("--percentiles", type=list[float], default=[10.0, 30.0, 50.0, 70.0, 90.0],
                        help="percent of pixels replaced; the unmodified baseline (0) is always trained")
    parser.add_argument("--seeds", type=list[int], default=[0, 1, 2], help="training seeds of every cell")
    parser.add_class_arguments(RemovalOptions, "removal")
    parser.add_argument("--source_checkpoint", type=str | None, default=None,
                        help="trained model for the maps (state dict or Lightning checkpoint); else trained here")
    parser.add_argument("--source_seed", type=int, default=0)
    parser.add_argument("--source_max_epochs", type=int | None, default=None,
                        help="epochs of the source model (default: trainer.max_epochs)")
    parser.add_argument("--map_batch_size", type=int, default=128)
    parser.add_argument("--map_shard_size", type=int, default=1024, help="samples per cached map shard")
    parser.add_argument("--wandb", type=bool, default=True, help="log every run to W&B (offline unless opted in)")
    parser.add_argument("--project", type=str, default="lit_xai")
    parser.add_argument("--group", type=str | None, default=None, help="W&B group (default: roar-<output dir name>)")
    parser.add_argument("--log_caches", type=bool, default=True,
                        help="at the end of a maps/all run (shard 0): log the map cache as a W&B artifact (type cache)")
    return parser


def main(args: list[str] | None = None) -> None:
    """Parse the command line / config and run the requested stage."""
    parser = build_parser()
    config = parser.parse_args(args)
    init = parser.instantiate_classes(config)
    output_dir = config.output_dir or str(run_folder("roar", config.name))
    pipeline = RoarPipeline(
        datamodule=init.data,
        model_kwargs=config.model.as_dict(),
        trainer_kwargs=config.trainer.as_dict(),
        methods=list(init.methods),
        percentiles=list(config.percentiles),
        seeds=list(config.seeds),
        output_dir=output_dir,
        removal=init.removal,
        shard=parse_shard(config.shard),
        source_checkpoint=config.source_checkpoint,
        source_seed=config.source_seed,
        source_max_epochs=config.source_max_epochs,
        map_batch_size=config.map_batch_size,
        map_shard_size=config.map_shard_size,
        wandb=config.wandb,
        project=config.project,
        group=config.group,
    )
    pipeline.run(config.stage)
    first = parse_shard(config.shard)[0] == 0 and rank_zero_only.rank == 0  # one process logs the shared cache
    if config.wandb and config.log_caches and config.stage in ("maps", "all") and first:
        log_map_cache(pipeline)


def log_map_cache(pipeline: RoarPipeline) -> None:
    """The map cache as a W&B artifact ``roar-maps-<model fingerprint>-<data key>`` (type ``cache``), logged by a
    run ``caches`` in the grid's group (offline unless opted in; uploads with ``wandb sync``)."""
    from lit_xai.loggers import LitXaiWandbLogger, log_cache_artifact

    cache = pipeline.map_cache()
    key = "-".join(cache.directory.relative_to(pipeline.output_dir / "maps").parts)
    logger = LitXaiWandbLogger(project=pipeline.project, name="caches", group=pipeline.group,
                               save_dir=str(pipeline.output_dir), job_type="roar-cache")
    try:
        log_cache_artifact(logger.experiment, cache.directory, "roar-maps", key)
    finally:
        logger.experiment.finish()


if __name__ == "__main__":
    main()
