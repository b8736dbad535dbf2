"""Read a fit config the way ``python -m lit_xai fit --config A --config B`` does: later files override earlier ones."""

from __future__ import annotations

from collections.abc import Sequence

import yaml


def deep_merge(base: dict, override: dict) -> dict:
    """``override`` on top of ``base``; nested mappings merge key by key, everything else is replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_configs(paths: Sequence[str]) -> dict:
    """The merged content of the YAML files ``paths``, in order."""
    config: dict = {}
    for path in paths:
        with open(path) as handle:
            config = deep_merge(config, yaml.safe_load(handle) or {})
    return config
