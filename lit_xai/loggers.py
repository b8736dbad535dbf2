"""Weights & Biases, offline unless the user opts in; the run folder every command writes into; caches as artifacts.

Without network an online run waits ~90 s and fails, so the project default is offline. Opt in with
``LIT_XAI_WANDB_MODE=online`` (or ``WANDB_MODE=online``), or ``offline: false`` on the logger in a config.
Offline runs land in ``<run folder>/wandb/offline-run-*`` and can be uploaded later with ``wandb sync``.

**One output layout** (README "Where outputs go"): every command writes into its run folder
``<root>/<command>/<name>/`` (:func:`run_folder`; root ``runs``): the W&B run folders (``wandb/``), checkpoints,
tables, figures and caches. The name is the run's name (the logger's ``name`` for ``fit``/``validate``/``test``,
``--name`` for ``roar``/``axioms``/``pathways``/``report``), so a rerun with the same name finds its caches again.

Project defaults beyond Lightning's ``WandbLogger``: W&B's own console output is silenced (``Settings(silent=True)``;
the CLI prints one line with the run's folder instead of W&B's banners; ``quiet: false`` brings them back), and the
checkpoints a ``ModelCheckpoint`` keeps (the default keeps the best only) are logged as a ``model`` artifact at the
end of a successful ``fit`` with Lightning's aliases ``best``/``latest`` (``log_best_checkpoint: false`` opts out).
Lightning's own ``log_model=True`` refuses offline runs; offline artifacts are staged and upload with ``wandb sync``.
Cache folders are logged as ``cache`` artifacts by :func:`log_cache_artifact`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger

MODE_VARIABLES = ("LIT_XAI_WANDB_MODE", "WANDB_MODE")
#: where the run folders go (relative to the working directory)
RUNS_ROOT = "runs"
#: the run name when none is given
DEFAULT_RUN_NAME = "default"
#: W&B artifact names allow letters, digits, ``-``, ``_`` and ``.``, at most 128 characters
_ARTIFACT_NAME_CHARS = 128


def wandb_mode() -> str:
    """``online``, ``offline`` or ``disabled``: the first of the mode variables that is set, else ``offline``."""
    for name in MODE_VARIABLES:
        value = os.environ.get(name)
        if value:
            if value not in ("online", "offline", "disabled", "run", "dryrun"):
                raise ValueError(f"{name}={value!r}: expected online, offline or disabled")
            return {"run": "online", "dryrun": "offline"}.get(value, value)
    return "offline"


def run_folder(command: str, name: str | None, root: str | Path = RUNS_ROOT) -> Path:
    """The folder of a run: ``<root>/<command>/<name>`` (``name`` defaults to ``default``).

    A name is one path component: a name with a separator (or ``.``/``..``) would write outside the layout."""
    name = name or DEFAULT_RUN_NAME
    if name in (".", "..") or "/" in name or os.sep in name:
        from lit_xai.models.classifier import ConfigurationError

        raise ConfigurationError(f"run name {name!r} must be one folder name (no '/', not '.' or '..')")
    return Path(root) / command / name


class LitXaiWandbLogger(WandbLogger):
    """``WandbLogger`` whose ``offline`` default follows :func:`wandb_mode` (offline unless opted in).

    Args beyond ``WandbLogger``'s:
        save_dir: with ``command``, the root of the run folders (the run folder is
            ``<save_dir>/<command>/<name>``, :func:`run_folder`); without, the folder itself (as Lightning's).
        command: the lit_xai command (``fit``, ``validate``, ``test``, …); the CLI sets it to its subcommand.
        quiet: silence W&B's console banners.
        log_best_checkpoint: log the kept checkpoints as a ``model`` artifact at the end of a successful fit.

    A ``ModelCheckpoint`` without ``dirpath`` writes to ``<run folder>/<W&B run id>/checkpoints/`` (Lightning's
    ``save_dir/name/version/checkpoints`` without the project level, see :attr:`name`), so two fits with the same
    run name keep their checkpoints apart.
    """

    def __init__(
        self,
        project: str = "lit_xai",
        name: str | None = None,
        save_dir: str = RUNS_ROOT,
        offline: bool | None = None,
        log_model: bool | str = False,
        group: str | None = None,
        quiet: bool = True,
        log_best_checkpoint: bool = True,
        command: str | None = None,
        **kwargs: Any,
    ) -> None:
        mode = wandb_mode()
        if quiet and kwargs.get("settings") is None:  # jsonargparse passes settings=None explicitly
            import wandb

            kwargs["settings"] = wandb.Settings(silent=True)
        if offline is None:
            offline = mode != "online"
        if command is not None:
            save_dir = str(run_folder(command, name, save_dir))
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
        self.command = command

    @property
    def name(self) -> str:
        """Lightning builds a checkpoint folder as ``save_dir/<name>/<version>/checkpoints``; ``WandbLogger`` puts
        the W&B project there. The run folder already names the run, so this level is empty:
        ``<run folder>/<W&B run id>/checkpoints`` (the W&B project is unchanged)."""
        return ""

    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:
        super().after_save_checkpoint(checkpoint_callback)
        if self.log_best_checkpoint and not self._log_model:
            # Lightning's finalize logs the checkpoints of the callbacks registered here (log_model=True's path)
            self._checkpoint_callbacks[id(checkpoint_callback)] = checkpoint_callback


def cache_files(folder: str | Path) -> list[Path]:
    """The finished files of a cache folder, sorted: no temporary files of an atomic write in progress
    (``.<name>.<random>.tmp``, :func:`lit_xai.storage.atomic_write_bytes`)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".tmp")
                  and not p.name.startswith("."))


def names_key(files: list[Path], folder: str | Path) -> str:
    """A content key for a folder whose file names carry their own keys (IBA statistics, report cells): the
    SHA-256 (12 hex digits) of the sorted relative paths."""
    joined = "\n".join(str(p.relative_to(folder)) for p in files)
    return hashlib.sha256(joined.encode()).hexdigest()[:12]


def log_cache_artifact(run: Any, folder: str | Path, kind: str, key: str | None = None,
                       metadata: dict[str, Any] | None = None) -> Any:
    """Log a cache folder to the W&B ``run`` as an artifact of type ``cache`` named ``<kind>-<key>``.

    ``key`` is the cache's content key (e.g. the ROAR map cache's ``<model fingerprint>-<data key>``); without one,
    :func:`names_key` of the files. Files are added with W&B's ``immutable`` policy: referenced in place, not copied
    into W&B's staging folder (caches can be large; lit_xai never rewrites a finished cache file, it only replaces a
    corrupt one). An offline run records the manifest now and uploads with ``wandb sync``. Returns the artifact, or
    ``None`` when the folder holds no finished file (nothing is logged).
    """
    import wandb

    folder = Path(folder).absolute()  # the manifest keeps local paths: valid from any working directory
    files = cache_files(folder)
    if not files:
        return None
    name = f"{kind}-{key or names_key(files, folder)}"
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:_ARTIFACT_NAME_CHARS]
    artifact = wandb.Artifact(name=name, type="cache", metadata={"folder": str(folder), "files": len(files),
                                                                   **(metadata or {})})
    for path in files:
        artifact.add_file(str(path), name=str(path.relative_to(folder)), policy="immutable")
    run.log_artifact(artifact)
    return artifact
