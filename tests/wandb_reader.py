"""Read back what an offline W&B run logged (test support).

wandb ≥ 0.31 writes ``run-<id>.wandb``: a 7-byte header (``:W&B``, magic, version) followed by a
LevelDB-log-style stream (32 KiB blocks; records of crc32c(4) length(2) type(1) payload, split across
blocks as FIRST/MIDDLE/LAST) of ``wandb_internal_pb2.Record`` protobufs.

``wandb.finish()`` can return before W&B's service has written the run file (on a busy machine the file still held
no record at all: issue 19 item 15), so every reader waits for the run's ``exit`` record, the last one W&B writes.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
#: how long to wait for W&B to write a finished run's exit record (seconds)
EXIT_TIMEOUT = 120.0


def read_records(path: str | Path) -> list[Any]:
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file")
    records, pending, pos = [], b"", HEADER
    while pos + 7 <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < 7:
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if (kind == 0 and length == 0) or pos + 7 + length > len(data):  # end, or a record still being written
            break
        payload = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == FULL:
            pending = payload
        elif kind == FIRST:
            pending = payload
            continue
        elif kind == MIDDLE:
            pending += payload
            continue
        elif kind == LAST:
            pending += payload
        record = wandb_internal_pb2.Record()
        record.ParseFromString(pending)
        records.append(record)
        pending = b""
    return records


def run_file(run_dir: str | Path) -> Path:
    files = sorted(Path(run_dir).glob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"no run-*.wandb in {run_dir}")
    return files[0]


def finished_records(run_dir: str | Path, timeout: float = EXIT_TIMEOUT) -> list[Any]:
    """The records of a finished run, once W&B has written its ``exit`` record (polls; raises after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        records = read_records(run_file(run_dir))
        if any(record.WhichOneof("record_type") == "exit" for record in records):
            return records
        if time.monotonic() > deadline:
            raise TimeoutError(f"{run_dir}: no exit record after {timeout:.0f} s ({len(records)} records): "
                               "was the run finished (wandb.finish())?")
        time.sleep(0.1)


def history(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every history row (``wandb.log`` call) as ``{key: decoded value}``."""
    rows = []
    for record in finished_records(run_dir):
        if record.WhichOneof("record_type") == "history":
            row = {}
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                row[key] = json.loads(item.value_json)
            rows.append(row)
    return rows


def summary(run_dir: str | Path) -> dict[str, Any]:
    """The run summary (last value per key), merged over all summary records."""
    merged: dict[str, Any] = {}
    for record in finished_records(run_dir):
        if record.WhichOneof("record_type") == "summary":
            for item in record.summary.update:
                merged[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return merged


def logged_keys(run_dir: str | Path) -> set[str]:
    """Keys in history rows or the summary (the last step's row may reach only the summary)."""
    return {key for row in history(run_dir) for key in row} | set(summary(run_dir))


def config(run_dir: str | Path) -> dict[str, Any]:
    """The run config (merged over all config records), values decoded."""
    merged: dict[str, Any] = {}
    for record in finished_records(run_dir):
        if record.WhichOneof("record_type") == "config":
            for item in record.config.update:
                key = item.key or "/".join(item.nested_key)
                merged[key] = json.loads(item.value_json)
    return merged
