"""``unlearn-cli collect``: sample latents, generate, label positive/negative.

Labels come from the labeller classifier, or from a person: ``--sheet`` writes numbered
contact sheets (the paper's implicit-feedback set-up) and ``--labels FILE`` reads the
positive tile numbers back (integers separated by spaces, commas or new lines).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from feature_unlearn.unlearn.configs import CollectConfig
from feature_unlearn.unlearn.errors import DataError
from feature_unlearn.unlearn.io import atomic_write, load_checkpoint, write_json
from feature_unlearn.unlearn.metrics import generate, latents
from feature_unlearn.unlearn.models import AttributeClassifier, z_dim_of

SHEET_TILES = 100  # 10 x 10 tiles per contact sheet


@dataclass(frozen=True)
class Collection:
    z: torch.Tensor  # [N, z_dim]
    labels: dict[str, torch.Tensor]  # feature -> [N] int64 (0/1)
    source: str  # "labeller:<name>" or "person:<file>"

    def stats(self) -> dict[str, Any]:
        return {
            "n": len(self.z),
            "source": self.source,
            "positive_rate": {k: float(v.float().mean()) for k, v in self.labels.items()},
        }


def label_with_classifier(
    g: nn.Module, z: torch.Tensor, labeller: AttributeClassifier, features: tuple[str, ...]
) -> dict[str, torch.Tensor]:
    pred = labeller.predict(generate(g, z))
    return {f: pred[f] for f in features}


def collect_with_labeller(
    g: nn.Module, labeller: AttributeClassifier, features: tuple[str, ...], n: int, seed: int, name: str
) -> Collection:
    z = latents(n, z_dim_of(g), seed)
    return Collection(z, label_with_classifier(g, z, labeller, features), f"labeller:{name}")


def read_positive_tiles(path: Path, n: int) -> torch.Tensor:
    """Parse a person's labels file into a 0/1 vector [n]; reject out-of-range and duplicates."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise DataError(f"--labels {path}: cannot read ({exc})") from None
    tokens = [t for t in re.split(r"[\s,;]+", text.strip()) if t]
    try:
        idx = [int(t) for t in tokens]
    except ValueError:
        bad = next(t for t in tokens if not t.lstrip("-").isdigit())
        raise DataError(f"--labels {path}: {bad!r} is not a tile number") from None
    out_of_range = [i for i in idx if not 0 <= i < n]
    if out_of_range:
        raise DataError(f"--labels {path}: tile {out_of_range[0]} is out of range 0..{n - 1}")
    if len(set(idx)) != len(idx):
        dup = next(i for i in idx if idx.count(i) > 1)
        raise DataError(f"--labels {path}: tile {dup} is listed twice")
    y = torch.zeros(n, dtype=torch.int64)
    y[idx] = 1
    return y


def write_sheets(g: nn.Module, z: torch.Tensor, out: Path, scale: int = 3) -> list[Path]:
    """Numbered contact sheets of the images for z (tile i = latent i)."""
    from PIL import Image, ImageDraw

    from feature_unlearn.unlearn.images import grid

    paths = []
    for start in range(0, len(z), SHEET_TILES):
        x = generate(g, z[start : start + SHEET_TILES])
        im = Image.fromarray(grid(x, nrow=10, pad=12))
        im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
        draw = ImageDraw.Draw(im)
        tile = (x.shape[-1] + 12) * scale
        for i in range(len(x)):
            r, c = divmod(i, 10)
            draw.text((c * tile + 4, r * tile + 2), str(start + i), fill=(200, 0, 0))
        path = out / f"sheet-{start // SHEET_TILES:03d}.png"
        atomic_write(path, lambda p, im=im: im.save(p, format="PNG"))  # type: ignore[misc]
        paths.append(path)
    return paths


def save_collection(c: Collection, out: Path, extra: dict[str, Any]) -> None:
    tensors = {"z": c.z.contiguous(), **{f"label.{k}": v.contiguous() for k, v in c.labels.items()}}
    atomic_write(out / "collect.safetensors", lambda p: save_file(tensors, str(p)))
    write_json(out / "collect.json", {**c.stats(), **extra})


def collection_from_labels(labels: Path, feature: str, z_dim: int) -> Collection:
    """A person's labels (``labels``) for the latents a ``collect --sheet`` run saved beside them."""
    z = load_latents(labels.parent)
    if z.shape[1] != z_dim:
        raise DataError(f"--labels: latents in {labels.parent} have z_dim {z.shape[1]}, the model {z_dim}")
    return Collection(z, {feature: read_positive_tiles(labels, len(z))}, f"person:{labels}")


def load_latents(directory: Path) -> torch.Tensor:
    """The latents a ``collect --sheet`` run saved (tile i = row i)."""
    stem = directory / "latents"
    if not stem.with_suffix(".safetensors").is_file():
        raise DataError(f"--labels: {directory} holds no latents.safetensors (run collect --sheet first)")
    ckpt = load_checkpoint(stem)
    if ckpt.record.KIND != "latents" or "z" not in ckpt.tensors:
        raise DataError(f"--labels: {stem}.json does not hold the latents of a collect --sheet run")
    return ckpt.tensors["z"]


def run_collect(cfg: CollectConfig) -> dict[str, Any]:
    """Sheets for a person (``sheet``), a person's labels (``labels``) or the labeller's."""
    from feature_unlearn.unlearn.artifacts import LatentsRecord
    from feature_unlearn.unlearn.io import save_checkpoint
    from feature_unlearn.unlearn.pretrain.recipes import DEFAULT_FEATURE, classifier_for
    from feature_unlearn.unlearn.zoo import load_classifier, load_generator_with_meta

    g, meta = load_generator_with_meta(cfg.model, cfg.trust_code)
    feats = cfg.features or (DEFAULT_FEATURE.get(str(meta.record.dataset), ""),)
    cfg.out.mkdir(parents=True, exist_ok=True)
    if cfg.sheet:
        z = latents(cfg.n, z_dim_of(g), cfg.seed)
        save_checkpoint(cfg.out / "latents", {"z": z}, LatentsRecord(kind="latents", model=cfg.model, seed=cfg.seed))
        sheets = write_sheets(g, z, cfg.out)
        return {
            "n": cfg.n,
            "sheets": [str(p) for p in sheets],
            "next": f"list positive tile numbers in a file, then --labels FILE (in {cfg.out})",
        }
    if cfg.labels is not None:
        c = collection_from_labels(cfg.labels, feats[0], z_dim_of(g))
    else:
        name = cfg.labeller or classifier_for(str(meta.record.dataset), "labeller")
        labeller = load_classifier(name)
        for f in feats:
            if labeller.cfg.heads.get(f) != 2:
                raise DataError(f"--feature {f!r}: not a binary attribute of the labeller {name}")
        c = collect_with_labeller(g, labeller, tuple(feats), cfg.n, cfg.seed, name)
    save_collection(c, cfg.out, {"model": cfg.model, "seed": cfg.seed})
    return c.stats()
