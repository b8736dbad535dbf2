"""Weights & Biases, offline unless the user opts in.

Without network an online run waits ~90 s and fails, so the project default is offline. Opt in with
``LIT_XAI_WANDB_MODE=online`` (or ``WANDB_MODE=online``), or ``offline: false`` on the logger in a config.
Offline runs land in ``<save_dir>/wandb/offline-run-*`` and can be uploaded later with ``wandb sync``.

Project defaults beyond Lightning's ``WandbLogger``: W&B's own console output is silenced (``Settings(silent=True)``;
the CLI prints one line with the run's folder instead of W&B's banners; ``quiet: false`` brings them back), and the
checkpoints a ``ModelCheckpoint`` keeps (the default keeps the best only) are logged as a ``model`` artifact at the
end of a successful ``fit`` with Lightning's aliases ``best``/``latest`` (``log_best_checkpoint: false`` opts out).
Lightning's own ``log_model=True`` refuses offline runs; offline artifacts are staged and upload with ``wandb sync``.
"""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger

MODE_VARIABLES = ("LIT_XAI_WANDB_MODE", "WANDB_MODE")


def wandb_mode() -> str:
    """``online``, ``offline`` or ``disabled``: the first of the mode variables that is set, else ``offline``."""
    for name in MODE_VARIABLES:
        value = os.environ.get(name)
        if value:
            if value not in ("online", "offline", "disabled", "run", "dryrun"):
                raise ValueError(f"{name}={value!r}: expected online, offline or disabled")
            return {"run": "online", "dryrun": "offline"}.get(value, value)
    return "offline"


class LitXaiWandbLogger(WandbLogger):
    """``WandbLogger`` whose ``offline`` default follows :func:`wandb_mode` (offline unless opted in)."""

    def __init__(
        self,
        project: str = "lit_xai",
        name: str | None = None,
        save_dir: str = "runs",
        offline: bool | None = None,
        log_model: bool | str = False,
        group: str | None = None,
        quiet: bool = True,
        log_best_checkpoint: bool = True,
        **kwargs: Any,
    ) -> None:
        mode = wandb_mode()
        if quiet and kwargs.get("settings") is None:  # jsonargparse passes settings=None explicitly
            import wandb

            kwargs["settings"] = wandb.Settings(silent=True)
        if offline is None:
            offline = mode != "online"
        # absolute: wandb's service process may have been started from another working directory
        save_dir = os.path.abspath(save_dir)
        os.makedirs(save_dir, exist_ok=True)
        super().__init__(
            project=project, name=name, save_dir=save_dir, offline=offline, log_model=log_model,
            group=group, mode="disabled" if mode == "disabled" else None, **kwargs,
        )
        if self._wandb_init.get("anonymous") is None:  # Lightning passes anonymous=None, which wandb warns about
            self._wandb_init.pop("anonymous", None)
        self.log_best_checkpoint = log_best_checkpoint

    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:
        super().after_save_checkpoint(checkpoint_callback)
        if self.log_best_checkpoint and not self._log_model:
            # Lightning's finalize logs the checkpoints of the callbacks registered here (log_model=True's path)
            self._checkpoint_callbacks[id(checkpoint_callback)] = checkpoint_callback
