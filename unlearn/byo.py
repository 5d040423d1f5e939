"""Bring your own generator and detector: ``package.module:factory`` specs, imported only on request.

A generator factory returns an ``nn.Module`` with an int ``z_dim`` and ``forward(z [N, z_dim]) ->
[N, C, H, W]`` in [-1, 1], C of 1 or 3, H and W ≥ 16. A detector factory returns an ``nn.Module``
mapping such images to logits: a dict ``{feature: [N]}``, or a tensor [N] for one feature. Both
contracts are checked at once, with a one-line error naming what is wrong.

Importing runs code, so every command asks for ``--trust-code`` before it imports anything,
including later commands on a run that recorded a factory. The current directory is put on the
import path (a console script's own directory is otherwise the only one), so a user's
``my_models.gen:build`` beside their shell resolves as it would under ``python -m``.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import load_file
from torch import nn

from feature_unlearn import __version__
from feature_unlearn.unlearn.artifacts import ModelRecord
from feature_unlearn.unlearn.errors import ConfigError
from feature_unlearn.unlearn.models import AttributeClassifier, ClassifierConfig

SPEC = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
MIN_SIDE = 16


def is_spec(name: str | Path) -> bool:
    """``package.module:factory`` (and not an existing file or directory of that name)."""
    s = str(name)
    return bool(SPEC.match(s)) and not Path(s).exists()


def factory_spec(factory: Any, flag: str) -> str:
    """The ``package.module:name`` of a factory function handed to the Python API (a string passes through)."""
    if isinstance(factory, str):
        return factory
    if isinstance(factory, nn.Module):
        raise ConfigError(
            f"{flag} got a built {type(factory).__name__}: pass the function that builds it (importable as "
            "package.module:name), so the run directory can record how evaluate and export rebuild it"
        )
    module, name = getattr(factory, "__module__", None), getattr(factory, "__qualname__", "")
    spec = f"{module}:{name}"
    if not callable(factory) or module in (None, "__main__") or not SPEC.match(spec):
        raise ConfigError(
            f"{flag} {factory!r}: pass a module-level function of an importable module (not a lambda, a nested "
            "function or one defined in __main__), or its name as 'package.module:function'"
        )
    return spec


def _factory(spec: str, flag: str) -> Callable[..., Any]:
    if not SPEC.match(spec):
        raise ConfigError(f"{flag} {spec!r}: expected the form 'package.module:function'")
    module_name, attr = spec.split(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an import runs arbitrary code: any failure is the user's module's
        raise ConfigError(f"{flag} {spec!r}: cannot import {module_name!r} ({type(exc).__name__}: {exc})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"{flag} {spec!r}: {module_name} has no callable {attr!r}")
    return factory  # type: ignore[no-any-return]


def _build(spec: str, flag: str, trust_code: bool) -> nn.Module:
    if not trust_code:
        raise ConfigError(f"{flag} {spec!r}: importing it runs its code; pass --trust-code if you trust its source")
    return build(spec, flag)


def build(spec: str, flag: str, kwargs: Optional[dict[str, Any]] = None) -> nn.Module:
    """Import ``package.module:factory`` and call it (the caller has checked trust): an eval-mode module."""
    factory = _factory(spec, flag)
    try:
        model = factory(**(kwargs or {}))
    except Exception as exc:
        raise ConfigError(f"{flag} {spec!r}: the factory raised {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{flag} {spec!r}: the factory must return a torch.nn.Module, got {type(model).__name__}")
    return model.eval()


@torch.no_grad()
def check_generator_contract(g: nn.Module, where: str) -> tuple[int, int, int]:
    """z_dim, shape, channels, size and range of a generator; returns (C, H, W)."""
    z_dim = getattr(g, "z_dim", None)
    if isinstance(z_dim, bool) or not isinstance(z_dim, int) or z_dim < 1:
        raise ConfigError(f"{where}: the module needs an int attribute z_dim ≥ 1 (got {z_dim!r})")
    try:
        x = g(torch.randn(2, z_dim, generator=torch.Generator().manual_seed(0)))
    except Exception as exc:
        raise ConfigError(f"{where}: forward(z [2, {z_dim}]) raised {type(exc).__name__}: {exc}") from None
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[0] != 2:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ConfigError(f"{where}: forward(z [2, {z_dim}]) must return a tensor [2, C, H, W], got {got}")
    c, h, w = (int(v) for v in x.shape[1:])
    if c not in (1, 3) or min(h, w) < MIN_SIDE:
        raise ConfigError(f"{where}: images must have 1 or 3 channels and H, W ≥ {MIN_SIDE}, got [{c}, {h}, {w}]")
    if not torch.isfinite(x).all() or x.min() < -1.0001 or x.max() > 1.0001:
        raise ConfigError(
            f"{where}: images must be finite and in [-1, 1] (got [{float(x.min()):.3g}, {float(x.max()):.3g}])"
        )
    return c, h, w


def state_sha256(model: nn.Module) -> str:
    """sha256 over the state dict (names, shapes, bytes in order): the identity of an imported model."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def foreign_generator(spec: str, trust_code: bool, weights: Optional[Path] = None) -> tuple[nn.Module, ModelRecord]:
    """A user's generator (with ``--weights`` loaded strictly), contract-checked, and a record describing it."""
    g = _build(spec, "--model", trust_code)
    if weights is not None:
        try:
            state = load_file(str(weights))
        except Exception as exc:  # missing file, not safetensors, truncated
            raise ConfigError(f"--weights {weights}: cannot read it as safetensors ({exc})") from None
        try:
            g.load_state_dict(state)
        except RuntimeError as exc:
            first = str(exc).splitlines()[1 if len(str(exc).splitlines()) > 1 else 0].strip()
            raise ConfigError(f"--weights {weights}: does not fit {spec} ({first[:200]})") from None
    c, h, w = check_generator_contract(g, f"--model {spec!r}")
    arch = {"kind": "factory", "factory": spec, "image": [c, h, w]}
    metrics = {"weights": str(weights) if weights else None}
    return g, ModelRecord(kind="generator", arch=arch, metrics=metrics, version=__version__)


class ForeignDetector(AttributeClassifier):
    """A user's detector behind the labeller / auditor interface: binary heads named by its outputs."""

    def __init__(self, module: nn.Module, features: tuple[str, ...], spec: str, single: bool) -> None:
        nn.Module.__init__(self)  # not the zoo architecture: only the interface is shared
        self.module, self.spec, self.single = module, spec, single
        self.cfg = ClassifierConfig(kind="foreign", channels=0, heads=dict.fromkeys(features, 2), width=0)
        self.num_features = 0

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.module(x)
        if self.single:
            return {next(iter(self.cfg.heads)): out.reshape(len(x))}
        return {k: out[k].reshape(len(x)) for k in self.cfg.heads}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise ConfigError(f"detector {self.spec!r}: a foreign detector has no feature space (FID needs a zoo auditor)")


@torch.no_grad()
def foreign_detector(spec: str, trust_code: bool, images: torch.Tensor, feature: Optional[str]) -> ForeignDetector:
    """``--labeller``/``--auditor`` spec: probed once on ``images`` [N, C, H, W] to learn its outputs."""
    module = _build(spec, "--labeller", trust_code)
    try:
        out = module(images)
    except Exception as exc:
        raise ConfigError(f"--labeller {spec!r}: forward(images {list(images.shape)}) raised {exc}") from None
    n = len(images)
    if isinstance(out, torch.Tensor) and out.shape in ((n,), (n, 1)):
        if feature is None:
            raise ConfigError(f"--labeller {spec!r}: returns one logit per image: name its feature with --feature")
        return ForeignDetector(module, (feature,), spec, single=True)
    if isinstance(out, dict) and out and all(isinstance(v, torch.Tensor) and v.numel() == n for v in out.values()):
        return ForeignDetector(module, tuple(str(k) for k in out), spec, single=False)
    raise ConfigError(f"--labeller {spec!r}: must return logits [N] or a dict {{feature: [N]}} for N images")


@torch.no_grad()
def load_detector(
    name: str, trust_code: bool, g: nn.Module, feature: Optional[str] = None, seed: int = 0
) -> AttributeClassifier:
    """A zoo classifier by name or path, or a user's detector (``module:factory``, probed on 8 images of g)."""
    if is_spec(name):
        images = g(torch.randn(8, int(g.z_dim), generator=torch.Generator().manual_seed(seed)))  # type: ignore[arg-type]
        return foreign_detector(name, trust_code, images, feature)
    from feature_unlearn.unlearn.zoo import load_classifier

    return load_classifier(name)
