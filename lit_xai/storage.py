"""On-disk cache primitives shared by every cache (IBA statistics, ROAR maps and manifests, axiom scenes, configs).

- :func:`weights_fingerprint`: the model part of a cache key — it changes exactly when the weights change.
- Atomic writes: write a temporary file in the target folder, then ``os.replace`` it (atomic on POSIX), so a reader
  (or a run resumed after a crash) sees either the old file or the complete new one, never half of it. Files get the
  usual ``0o666 & ~umask`` mode (a temporary file is created ``0o600``), so a group can share a cache folder.
- Checked files: :func:`atomic_torch_save` prefixes the payload with a SHA-256 of its bytes and :func:`load_checked`
  verifies it, so a truncated or bit-flipped cache file is detected (:class:`CorruptCacheFile`) and recomputed by its
  cache instead of being read silently or crashing with a raw ``OSError``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import warnings
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


#: Header of a checked file: this tag, the hex SHA-256 of the payload, a newline, then the payload.
CHECKED_MAGIC = b"lit_xai-sha256:"
_DIGEST_CHARS = 64
#: The mode of a file when the process umask cannot be read (the common default umask 022).
DEFAULT_FILE_MODE = 0o644


class CorruptCacheFile(OSError):
    """A cache file that is truncated, altered or not written by :func:`atomic_torch_save`."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"corrupt cache file {path}: {reason}")
        self.path = Path(path)
        self.reason = reason


def _file_mode() -> int:
    """``0o666 & ~umask`` read from ``/proc`` (reading the umask via ``os.umask`` would change process state)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return DEFAULT_FILE_MODE


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
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, payload: Any) -> None:
    """Atomic, human-readable JSON write (sorted keys, indented)."""
    atomic_write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` with the atomic-write guarantee and a SHA-256 header that :func:`load_checked` verifies."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    payload = buffer.getvalue()
    digest = hashlib.sha256(payload).hexdigest().encode()
    atomic_write_bytes(path, CHECKED_MAGIC + digest + b"\n" + payload)


def _checked_payload(path: Path) -> bytes:
    data = path.read_bytes()
    header = len(CHECKED_MAGIC) + _DIGEST_CHARS + 1
    if not data.startswith(CHECKED_MAGIC) or len(data) < header or data[header - 1 : header] != b"\n":
        raise CorruptCacheFile(path, "no checksum header (truncated, or not written by lit_xai.storage)")
    stored = data[len(CHECKED_MAGIC) : header - 1].decode("ascii", errors="replace")
    payload = data[header:]
    actual = hashlib.sha256(payload).hexdigest()
    if actual != stored:
        raise CorruptCacheFile(
            path, f"SHA-256 mismatch (stored {stored[:12]}…, content {actual[:12]}…, {len(payload)} payload bytes)"
        )
    return payload


def load_checked(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Load a file written by :func:`atomic_torch_save` (``weights_only``); :class:`CorruptCacheFile` if its bytes do
    not match the stored SHA-256 (truncated, bit-flipped, or an older unchecked file)."""
    payload = _checked_payload(Path(path))
    return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)


def _discard(error: CorruptCacheFile) -> None:
    warnings.warn(f"{error}; discarding it and recomputing", RuntimeWarning, stacklevel=3)
    error.path.unlink(missing_ok=True)


def is_intact(path: str | Path) -> bool:
    """Whether ``path`` is a complete checked file. A corrupt one is reported (a warning naming the file and the
    reason) and deleted, so that its cache recomputes it; a missing one is simply ``False``."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        _checked_payload(path)
    except CorruptCacheFile as error:
        _discard(error)
        return False
    return True


def load_or_discard(path: str | Path, map_location: str | torch.device = "cpu") -> Any | None:
    """:func:`load_checked`, or ``None`` when ``path`` is missing or corrupt (reported and deleted, as in
    :func:`is_intact`)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return load_checked(path, map_location)
    except CorruptCacheFile as error:
        _discard(error)
        return None
