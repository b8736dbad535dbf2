"""On-disk cache primitives shared by every cache (IBA statistics, ROAR maps and manifests, axiom scenes, configs).

- :func:`weights_fingerprint`: the model part of a cache key — it changes exactly when the weights change.
- Atomic writes: write a temporary file in the target folder, then ``os.replace`` it (atomic on POSIX), so a reader
  (or a run resumed after a crash) sees either the old file or the complete new one, never half of it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn


def weights_fingerprint(model: nn.Module, chars: int = 64) -> str:
    """SHA-256 (the first ``chars`` hex digits) over the names, dtypes, shapes and bytes of the ``state_dict``."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:chars]


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` either keeps its old content or holds all of ``data``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, payload: Any) -> None:
    """Atomic, human-readable JSON write (sorted keys, indented)."""
    atomic_write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` with the atomic-write guarantee."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())
