"""A module of this repository as it was at a git revision, for paired before/after timings on the shared harness.

``load_module_at("HEAD~3", "lit_xai/attribution/lrp.py")`` imports that file's text from the revision as a separate
module (its classes are not registered: the registry keeps today's methods). The old module imports today's versions
of everything else; :func:`call_at` runs an old method under the old contract guard too (``base.py`` of the same
revision), so the whole call path is "before".
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]


def load_module_at(revision: str, path: str) -> ModuleType:
    """The module in ``path`` (relative to the repository root) as of git ``revision``."""
    source = subprocess.run(["git", "show", f"{revision}:{path}"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout
    name = f"at_{revision}_{Path(path).stem}".replace("~", "_").replace("^", "_").replace("-", "_")
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as handle:
        handle.write(source)
    import lit_xai.attribution.registry as registry

    def named(method_name: str):  # noqa: ANN202 (a class decorator)
        def decorator(cls: type) -> type:
            cls.name = method_name
            return cls
        return decorator

    register = registry.register
    registry.register = named  # the old classes are named but stay out of the registry
    try:
        spec = importlib.util.spec_from_file_location(name, handle.name)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
    finally:
        registry.register = register
        Path(handle.name).unlink()
    return module


def call_at(revision: str, method: Any, model: torch.nn.Module, inputs: torch.Tensor,
            target: torch.Tensor) -> torch.Tensor:
    """``method.attribute`` behind the input checks and model guard of ``lit_xai/attribution/base.py`` at
    ``revision`` (``AttributionMethod.__call__`` of that revision, for a method loaded by :func:`load_module_at`)."""
    base = _BASES.get(revision) or _BASES.setdefault(revision, load_module_at(revision, "lit_xai/attribution/base.py"))
    base.check_inputs(inputs)
    target = base.normalize_target(target, inputs.shape[0], inputs.device)
    with torch.inference_mode(False), torch.enable_grad(), base.preserved_model_state(model, freeze=True):
        return method.attribute(model, inputs.detach(), target).detach()


_BASES: dict[str, ModuleType] = {}
