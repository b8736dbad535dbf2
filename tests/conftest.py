"""Suite-wide settings: W&B offline and quiet, whatever the caller's environment."""

from __future__ import annotations

import os

os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.pop("LIT_XAI_WANDB_MODE", None)
