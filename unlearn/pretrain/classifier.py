"""Attribute classifier training (labeller and auditor share this loop, not the architecture)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from feature_unlearn.unlearn.data.augment import augment
from feature_unlearn.unlearn.data.base import ImageSet
from feature_unlearn.unlearn.models import AttributeClassifier, ClassifierConfig
from feature_unlearn.unlearn.pretrain.common import TrainConfig, batches, jitter, progress


def classifier_loss(
    model: AttributeClassifier,
    x: torch.Tensor,
    y: dict[str, torch.Tensor],
    scores: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Summed per-attribute losses; a binary attribute with a score learns sigmoid(score) (a soft target)."""
    out = model(x)
    loss = torch.zeros(())
    for k, logit in out.items():
        if model.cfg.heads[k] == 2:
            target = torch.sigmoid(scores[k]) if scores and k in scores else y[k].float()
            loss = loss + F.binary_cross_entropy_with_logits(logit, target)
        else:
            loss = loss + F.cross_entropy(logit, y[k])
    return loss


def train_classifier(data: ImageSet, kind: str, cfg: TrainConfig) -> AttributeClassifier:
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = AttributeClassifier(
        ClassifierConfig(kind=kind, channels=data.shape[0], heads=dict(data.classes), width=cfg.width)
    )
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    steps = cfg.epochs * (len(data) // cfg.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps)
    bar = progress(steps, kind)
    model.train()
    for _ in range(cfg.epochs):
        for idx in batches(len(data), cfg.batch, gen):
            x = data.images[idx]
            x = jitter(x, gen) if cfg.augment is None else augment(x, cfg.augment, gen)
            y = {k: v[idx] for k, v in data.attrs.items()}
            loss = classifier_loss(model, x, y, {k: v[idx] for k, v in data.scores.items()})
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    return model.eval()


def accuracy(model: AttributeClassifier, data: ImageSet) -> dict[str, float]:
    """Held-out accuracy per attribute."""
    pred = model.eval().predict(data.images)
    return {k: float((pred[k] == data.attrs[k]).float().mean()) for k in pred}
