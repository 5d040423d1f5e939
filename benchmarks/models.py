"""The generators a benchmark runs: zoo weights, or a random stand-in of the recipe's architecture.

Speed does not depend on the weights, so a base generator whose zoo weights are not shipped yet
(still training) is timed with a randomly initialised network of exactly its recipe's
architecture, and the results say so. The unlearning table never uses stand-ins.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from feature_unlearn.unlearn.artifacts import GuardRecord, ModelRecord
from feature_unlearn.unlearn.io import save_checkpoint
from feature_unlearn.unlearn.models import DCGANConfig, VAEConfig, arch_dict, build_generator
from feature_unlearn.unlearn.pretrain.recipes import RECIPES
from feature_unlearn.unlearn.zoo import WEIGHTS, load_generator_with_meta

CHANNELS = {"mnist": 1, "faces": 3}
GUARD_THRESHOLD = 1.0  # p(z) > 1 flags about 16% of N(0, I) latents; the guard's cost does not depend on it


@dataclass(frozen=True)
class BenchModel:
    name: str
    generator: nn.Module
    record: ModelRecord
    sha256: str  # of the zoo weights ("0" * 64 for a stand-in)
    weights: str  # "zoo" or "random stand-in (zoo weights not shipped)"


def shipped(name: str) -> bool:
    return (WEIGHTS / f"{name}.json").is_file()


def stand_in(name: str, seed: int = 0) -> tuple[nn.Module, ModelRecord]:
    """A random generator with the architecture the zoo recipe ``name`` trains."""
    recipe = RECIPES[name]
    tc, channels = recipe.train, CHANNELS[recipe.dataset]
    cfg = (DCGANConfig(z_dim=tc.z_dim, channels=channels, ngf=tc.width, ndf=tc.width) if recipe.model == "dcgan"
           else VAEConfig(z_dim=tc.z_dim, channels=channels, width=tc.width))  # fmt: skip
    torch.manual_seed(seed)
    g = build_generator(arch_dict(cfg)).eval()
    for m in g.modules():  # BatchNorm statistics that spread the pixels, as a trained network's do
        if isinstance(m, nn.BatchNorm2d):
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.normal_(0.0, 0.3)
            m.running_var.uniform_(0.05, 0.3)
    return g, ModelRecord(kind="generator", arch=arch_dict(cfg), dataset=recipe.dataset)


def load_bench_model(name: str) -> BenchModel:
    if shipped(name):
        g, meta = load_generator_with_meta(name)
        return BenchModel(name, g, meta.record, meta.sha256, "zoo")
    g, record = stand_in(name)
    return BenchModel(name, g, record, "0" * 64, "random stand-in (zoo weights not shipped)")


def guard_vector(z_dim: int, seed: int = 0) -> list[float]:
    u = np.random.default_rng(seed).standard_normal(z_dim)
    return (u / np.linalg.norm(u)).tolist()


def write_run(root: Path, model: BenchModel, guarded: bool) -> Path:
    """A checkpoint directory ``export_model`` accepts: with a guard entry (a fit run's shape) or plain."""
    record = ModelRecord(kind="generator", arch=model.record.arch, dataset=model.record.dataset)
    if guarded:
        z_dim = int(model.record.arch["z_dim"])
        guard = GuardRecord(direction=(tuple(guard_vector(z_dim)),), threshold=(GUARD_THRESHOLD,), features=("benchmark",))
        record = dataclasses.replace(record, guard=guard, base_model=model.name, base_sha256=model.sha256)
    save_checkpoint(root / "generator", model.generator.state_dict(), record)
    return root


def flops_per_image(g: nn.Module, z_dim: int) -> float:
    """Floating-point operations of one image, counted by torch.utils.flop_counter (2 per multiply-add)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        g(torch.zeros(1, z_dim))
    return float(counter.get_total_flops())
