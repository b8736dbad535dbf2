"""``python -m lit_xai``: a LightningCLI with the project's defaults, plus the project's own commands.

- ``fit``/``validate``/``test``/``predict`` are LightningCLI subcommands. Without ``--config`` they run on the
  embedded default (``lit_xai/default.yaml``: digits, a small CNN, a gradient-attribution callback).
- Project defaults: ``trainer.inference_mode=false`` (attribution needs gradients at validate/test), a W&B logger
  that is offline unless the user opts in (:mod:`lit_xai.loggers`), the resolved config pushed to the W&B run
  config and saved as ``lit_xai_config.yaml`` in the run's folder (no ``config.yaml`` collision).
- One output layout: the logger's run folder is ``<save_dir>/<subcommand>/<name>`` (``runs/fit/digits_default``
  for the default; :func:`lit_xai.loggers.run_folder`), as for the project commands (``runs/roar/<name>``, …).
- ``roar``, ``axioms``, ``pathways`` dispatch to workflows that are more than one ``Trainer`` call.
- Every command: configuration errors (unknown names, missing or unreadable files) are one line
  ``lit_xai: error: …`` (exit 2); SIGTERM/SIGINT stop the run at the next Python instruction with one line and exit
  ``128 + signal``; an open W&B run is finished (marked failed on errors), so nothing is left unflushed.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

from lit_xai.data.base import ClassificationDataModule
from lit_xai.models.classifier import ClassifierModule
from lit_xai.storage import atomic_write_bytes

DEFAULT_CONFIG = Path(__file__).with_name("default.yaml")
TRAINER_SUBCOMMANDS = ("fit", "validate", "test", "predict")
#: project commands: name → module with ``main(args: list[str] | None)``
COMMANDS = {
    "roar": ("lit_xai.roar.command", "remove-and-retrain grid: maps, retraining, resume, shards, summary"),
    "axioms": ("lit_xai.axioms.command", "axiom framework: generate scenes, evaluate methods, tables"),
    "pathways": ("lit_xai.pathways.command", "critical-pathway analysis of a trained model, with plots"),
    "report": ("lit_xai.report.command", "report card: every method × evaluation family, statistics, HTML"),
    "dissect": ("lit_xai.concepts.command", "Network Dissection and semantic attribution of checkpoints, figures"),
}
CONFIG_FILENAME = "lit_xai_config.yaml"
#: ``--ckpt_path`` values Lightning resolves itself (not files)
CKPT_KEYWORDS = ("best", "last", "hpc", "registry")


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean a bad configuration: printed as one line, not a traceback."""
    from lit_xai.attribution.base import AttributionError
    from lit_xai.callbacks.attribution_eval import CallbackConfigError
    from lit_xai.data.cifar10 import DatasetNotFoundError
    from lit_xai.models.backbones import BackboneError
    from lit_xai.models.classifier import ConfigurationError

    return (AttributionError, BackboneError, CallbackConfigError, ConfigurationError, DatasetNotFoundError)


def check_checkpoint(path: str | None) -> None:
    """A ``--ckpt_path`` that is not a readable PyTorch checkpoint → :class:`ConfigurationError` naming the file
    (missing, not a zip archive as ``torch.save`` writes, truncated or corrupt), before any run starts."""
    from lit_xai.models.classifier import ConfigurationError

    if path is None or path in CKPT_KEYWORDS or str(path).startswith("registry:"):
        return
    file = Path(path)
    if not file.is_file():
        nearby = sorted(p.name for p in file.parent.glob("*.ckpt"))[:5] if file.parent.is_dir() else []
        where = f"; checkpoints in {file.parent}: {', '.join(nearby)}" if nearby else ""
        raise ConfigurationError(f"--ckpt_path {path}: no such file{where}")
    if not zipfile.is_zipfile(file):
        raise ConfigurationError(
            f"--ckpt_path {path}: not a PyTorch checkpoint (torch.save writes a zip archive; this file is truncated "
            f"or of another type, {file.stat().st_size} bytes)"
        )
    try:
        with zipfile.ZipFile(file) as archive:
            if not any(name.endswith("/data.pkl") or name == "data.pkl" for name in archive.namelist()):
                raise ConfigurationError(f"--ckpt_path {path}: a zip archive without data.pkl, not a checkpoint")
            broken = archive.testzip()
    except (zipfile.BadZipFile, OSError) as error:
        raise ConfigurationError(f"--ckpt_path {path}: unreadable checkpoint ({error})") from None
    if broken is not None:
        raise ConfigurationError(f"--ckpt_path {path}: corrupt checkpoint (bad CRC in {broken})")


class RunConfigSaver(SaveConfigCallback):
    """Save the resolved config into the run: the W&B run's files and config, else the trainer's log dir.

    With W&B, ``trainer.log_dir`` is the logger's shared ``save_dir`` (every run would overwrite one file there),
    so the file goes into the run's own files folder instead. ``save_config`` runs on rank zero only and must not
    touch collectives (``trainer.log_dir`` broadcasts), or DDP deadlocks.
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if isinstance(trainer.logger, WandbLogger):
            self.save_to_log_dir = False  # the same decision on every rank
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        logger = trainer.logger
        if not isinstance(logger, WandbLogger):
            return
        config = self.parser.dump(self.config, skip_none=False)
        # nested keys (lit_xai_config.model.backbone, …), so runs can be filtered and grouped by any setting
        nested = yaml.safe_load(config)
        logger.experiment.config.update({"lit_xai_config": nested}, allow_val_change=True)
        atomic_write_bytes(Path(logger.experiment.dir) / CONFIG_FILENAME, config.encode())


class LitXaiCLI(LightningCLI):
    """LightningCLI with ``inference_mode=False``, an offline W&B logger and a post-fit test run."""

    def __init__(self, args: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(
            ClassifierModule,
            ClassificationDataModule,
            subclass_mode_data=True,
            save_config_callback=RunConfigSaver,
            save_config_kwargs={"config_filename": CONFIG_FILENAME, "overwrite": True},
            trainer_defaults={
                "inference_mode": False,
                "logger": {"class_path": "lit_xai.loggers.LitXaiWandbLogger"},
            },
            seed_everything_default=0,
            args=args,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_argument(
            "--test_after_fit", type=bool, default=True,
            help="after fit, run test on the best checkpoint (if the data has a test split)",
        )

    def before_instantiate_classes(self) -> None:
        """The project logger learns its command, so the run folder is ``<save_dir>/<subcommand>/<name>``
        (:func:`lit_xai.loggers.run_folder`: one layout for every command)."""
        from lit_xai.loggers import LitXaiWandbLogger

        if not self.subcommand:
            return
        logger = self.config[self.subcommand].trainer.get("logger")
        for spec in logger if isinstance(logger, list) else [logger]:
            if isinstance(spec, Namespace) and _is_subclass(spec.get("class_path"), LitXaiWandbLogger):
                spec.init_args.command = self.subcommand

    def _parse_ckpt_path(self) -> None:
        """Check ``--ckpt_path`` before LightningCLI reads hyperparameters from it (its first ``torch.load``)."""
        if self.config.get("subcommand"):
            check_checkpoint(self.config[self.config.subcommand].get("ckpt_path"))
        super()._parse_ckpt_path()

    def after_fit(self) -> None:
        if self.config[self.subcommand].get("test_after_fit", True) and not self.trainer.fast_dev_run:
            checkpoint = self.trainer.checkpoint_callback
            ckpt = "best" if checkpoint is not None and getattr(checkpoint, "best_model_path", "") else None
            # verbose=False: the attribution callbacks print their summary (direction, n, mean ± SE, Δ vs the
            # control); accuracy and loss follow in the last lines below
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt, verbose=False)
        self._print_locations()

    def after_validate(self) -> None:
        self._print_locations()

    def after_test(self) -> None:
        self._print_locations()

    def _print_locations(self) -> None:
        trainer = self.trainer
        if not trainer.is_global_zero:
            return
        lines = []
        logger = trainer.logger
        if isinstance(logger, WandbLogger):
            run_dir = Path(logger.experiment.dir).parent
            mode = "offline (upload later with `wandb sync " + str(run_dir) + "`)" if logger._offline else "online"
            lines.append(f"run folder: {logger.save_dir}")
            lines.append(f"W&B run ({mode}): {run_dir}")
            lines.append(f"  logs and media: {logger.experiment.dir}")
        elif logger is not None and trainer.log_dir:
            lines.append(f"logs: {trainer.log_dir}")
        ckpt = trainer.checkpoint_callback
        if ckpt is not None and getattr(ckpt, "best_model_path", ""):
            lines.append(f"best checkpoint: {ckpt.best_model_path}")
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("test/", "val/"))}
        if metrics:
            lines.append("metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))
        if lines:
            print("\n[lit_xai] " + "\n[lit_xai] ".join(lines), flush=True)


def _is_subclass(class_path: str | None, base: type) -> bool:
    """Whether the dotted ``class_path`` names ``base`` or a subclass of it (importable; else ``False``)."""
    if not class_path:
        return False
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return False
    return isinstance(cls, type) and issubclass(cls, base)


def _print_commands() -> None:
    print("\nlit_xai commands (python -m lit_xai <command> --help):")
    for name in TRAINER_SUBCOMMANDS:
        print(f"  {name:<9} Lightning {name} (no --config: the embedded digits default)")
    for name, (_, text) in COMMANDS.items():
        print(f"  {name:<9} {text}")


def with_default_config(args: list[str]) -> list[str]:
    """Insert the embedded default config for trainer subcommands called without ``--config``."""
    if args and args[0] in TRAINER_SUBCOMMANDS and not any(a == "--config" or a.startswith("--config=") for a in args):
        return [args[0], "--config", str(DEFAULT_CONFIG), *args[1:]]
    return args


def main(args: list[str] | None = None) -> None:
    """Entry point of ``python -m lit_xai`` and the ``lit-xai`` script."""
    args = list(sys.argv[1:] if args is None else args)
    # we pass the (possibly default-augmented) command line as ``args`` on purpose
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    if args and args[0] in COMMANDS:
        module = importlib.import_module(COMMANDS[args[0]][0])
        return _run_reporting_errors(lambda: module.main(args[1:]))
    if not args or args[0] in ("-h", "--help"):
        try:
            LitXaiCLI(args=["--help"])
        finally:
            _print_commands()
    _run_reporting_errors(lambda: LitXaiCLI(args=with_default_config(args)))


def _user_error_in(err: BaseException) -> BaseException | None:
    """The configuration error behind ``err`` (jsonargparse wraps instantiation errors), if any."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, _user_errors()):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__  # type: ignore[assignment]
    return None


class _StopSignals:
    """SIGTERM/SIGINT → ``KeyboardInterrupt`` in the main thread (Lightning shuts down gracefully on it); a second
    signal gets the default action (immediate termination)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: int | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.received = signum
        raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")

    @contextmanager
    def installed(self) -> Iterator[_StopSignals]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.getsignal(s) for s in self.SIGNALS}
        for s in self.SIGNALS:
            signal.signal(s, self)
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def _finish_wandb(exit_code: int) -> None:
    """Finish (flush and close) an open W&B run, so no command leaves one unflushed or orphaned."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=exit_code)


def _run_reporting_errors(run: Callable[[], Any]) -> None:
    exit_code = 0
    with _StopSignals().installed() as stop:
        try:
            run()
        except (KeyboardInterrupt, SystemExit) as err:
            if stop.received is None:
                exit_code = 1 if isinstance(err, KeyboardInterrupt) else _exit_code(err)
                raise
            exit_code = 128 + stop.received
            name = signal.Signals(stop.received).name
            print(f"lit_xai: error: stopped by {name}; the run is incomplete (exit {exit_code})", file=sys.stderr)
            raise SystemExit(exit_code) from None
        except Exception as err:
            exit_code = 1
            user_error = _user_error_in(err)
            if user_error is None:
                raise
            exit_code = 2
            print(f"lit_xai: error: {user_error}", file=sys.stderr)
            raise SystemExit(2) from None
        finally:
            _finish_wandb(exit_code)


def _exit_code(err: SystemExit) -> int:
    return err.code if isinstance(err.code, int) else (0 if err.code is None else 1)
