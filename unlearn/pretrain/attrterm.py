"""The labeller's attribute term in generator training (``pretrain --attr-weight W``).

A generator trained on pixels alone drops what those pixels barely show: faces-dcgan draws a smile
(a 1-pixel arc at 32x32) on 3.7% of its samples against 16.3% of the data, and the faces VAEs'
decoders average it away. The frozen zoo labeller, trained on labelled data, reads the attributes
the pixel losses miss, and gives the training a term in its own units:

- GAN (``RateMatch``): the generated batch's attribute shares are pulled toward the data's, both as
  the labeller reads them (its bias cancels), the distribution matching of fair generative models
  (Grover et al., 2019; Choi et al., 2020) done with a classifier's probabilities;
- VAE (``ReadingMatch``): each reconstruction keeps what the labeller reads on its input, as a
  deep-feature-consistent VAE (Hou et al., 2017) keeps a network's features, here attribute heads.

Optimising a network's reading invites patterns only that network reads. So the labeller reads
the generated images through the degradations it was trained with (``augment``: a fresh blur,
noise, shift and cast per image and step, expectation over transformation), and the auditor, a
different network with other degradations, grades the result: the labeller never judges a
generator it helped train.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from feature_unlearn.unlearn.data.augment import AugmentConfig, augment
from feature_unlearn.unlearn.models import AttributeClassifier

RUNNING_DECAY = 0.9  # ~10 batches of 64: the running share's noise is ~1.5 points at a 16% share


def _probabilities(heads: dict[str, int], logits: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per head, probabilities [N] (binary) or [N, K] (K-way)."""
    return {k: torch.sigmoid(v) if heads[k] == 2 else v.softmax(1) for k, v in logits.items()}


def soft_shares(labeller: AttributeClassifier, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per head, the labeller's probabilities on clean ``x``, differentiable in ``x``."""
    return _probabilities(labeller.cfg.heads, labeller(x))


class _Reader:
    """The frozen labeller reading images through its training degradations (or clean, without them)."""

    def __init__(self, labeller: AttributeClassifier, degrade: AugmentConfig | None, seed: int) -> None:
        self.labeller = labeller.eval()
        self.labeller.requires_grad_(False)
        self.degrade = degrade
        self.gen = torch.Generator().manual_seed(seed)

    def logits(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.labeller(augment(x, self.degrade, self.gen) if self.degrade is not None else x)

    def probabilities(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return _probabilities(self.labeller.cfg.heads, self.logits(x))


class RateMatch:
    """Generator loss term: the batch's attribute shares toward the data's, in the labeller's reading.

    The squared gap of each share, divided by its Bernoulli variance so a rare attribute counts as
    much as a common one, is minimised. Its gradient is taken at a running estimate of the
    generated shares (``RUNNING_DECAY``), because one batch of 64 reads a 16% share with ±4.6
    points of noise: the term is ``sum_k ((m_run - t) / v) . m_batch``, whose gradient is that of
    ``sum_k (m - t)^2 / 2v`` at ``m_run``. The data's shares are read clean (what the labeller was
    trained to be right on); the generated ones through ``degrade``.
    """

    def __init__(
        self,
        labeller: AttributeClassifier,
        data: torch.Tensor,
        degrade: AugmentConfig | None = None,
        seed: int = 0,
        batch: int = 512,
    ) -> None:
        self.reader = _Reader(labeller, degrade, seed)
        with torch.no_grad():
            parts = [soft_shares(self.reader.labeller, x) for x in data.split(batch)]
        self.target = {k: torch.cat([p[k] for p in parts]).mean(0) for k in parts[0]}
        self.var = {k: (t * (1 - t)).clamp_min(1e-3) for k, t in self.target.items()}
        self.running: dict[str, torch.Tensor] = {}

    def __call__(self, fake: torch.Tensor) -> torch.Tensor:
        shares = {k: p.mean(0) for k, p in self.reader.probabilities(fake).items()}
        loss = fake.new_zeros(())
        for k, m in shares.items():
            prev = self.running.get(k, m.detach())
            self.running[k] = RUNNING_DECAY * prev + (1 - RUNNING_DECAY) * m.detach()
            loss = loss + (((self.running[k] - self.target[k]) / self.var[k]) * m).sum()
        return loss

    def worst_gap(self) -> float:
        """Largest |running share − data share| in points (``pretrain`` prints it after each epoch)."""
        gaps = [(self.running[k] - self.target[k]).abs().max() for k in self.running]
        return 100.0 * float(max(gaps)) if gaps else 0.0


class ReadingMatch:
    """VAE loss term: the labeller's cross-entropy of each reconstruction against its reading of the input.

    Soft targets (the probabilities on the clean input), summed over the heads and averaged over
    the batch, in nats per image like the ELBO's terms; the reconstruction is read through
    ``degrade``.
    """

    def __init__(self, labeller: AttributeClassifier, degrade: AugmentConfig | None = None, seed: int = 0) -> None:
        self.reader = _Reader(labeller, degrade, seed)

    def __call__(self, x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        assert x.shape == recon.shape, f"input {tuple(x.shape)} and reconstruction {tuple(recon.shape)} differ"
        with torch.no_grad():
            target = soft_shares(self.reader.labeller, x)
        loss = x.new_zeros(())
        for k, logit in self.reader.logits(recon).items():
            if self.reader.labeller.cfg.heads[k] == 2:
                loss = loss + F.binary_cross_entropy_with_logits(logit, target[k])
            else:
                loss = loss + F.cross_entropy(logit, target[k])
        return loss
