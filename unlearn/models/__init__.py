"""Model registry: rebuild any network from the architecture dict saved beside its weights."""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from feature_unlearn.unlearn.artifacts import CODE_KINDS
from feature_unlearn.unlearn.errors import CheckpointError, ConfigError
from feature_unlearn.unlearn.models.classifier import AttributeClassifier, ClassifierConfig
from feature_unlearn.unlearn.models.dcgan import RESOLUTIONS, DCGANConfig, DCGANDiscriminator, DCGANGenerator
from feature_unlearn.unlearn.models.vae import PRIORS, VAE, FlowPrior, VAEConfig, VAEDecoder, VAEEncoder

__all__ = [
    "AttributeClassifier",
    "ClassifierConfig",
    "DCGANConfig",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "FlowPrior",
    "PRIORS",
    "RESOLUTIONS",
    "VAE",
    "VAEConfig",
    "VAEDecoder",
    "VAEEncoder",
    "arch_dict",
    "build_generator",
    "build_classifier",
    "check_generator",
    "z_dim_of",
]

GeneratorConfig = VAEConfig | DCGANConfig


def arch_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def _from_dict(cls: type, d: dict[str, Any], where: str) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise CheckpointError(f"{where}: unknown architecture fields {sorted(unknown)}")
    try:
        return cls(**d)
    except ConfigError as exc:  # a field's value the architecture refuses (resolution 48, say)
        raise CheckpointError(f"{where}: arch.{exc}") from None


def build_generator(arch: dict[str, Any], where: str = "arch", trust_code: bool = False) -> nn.Module:
    """A generator from its architecture dict: kind 'vae' or 'dcgan' (data), or 'factory' (code).

    A sidecar is data that travels between machines, so a ``factory`` it names is imported only
    when the caller passes ``trust_code`` (``--trust-code`` on the command line).
    """
    kind = arch.get("kind")
    if kind == "vae":
        return VAEDecoder(_vae_config(arch, where))
    if kind == "dcgan":
        return DCGANGenerator(_from_dict(DCGANConfig, arch, where))
    if kind in CODE_KINDS:
        spec = str(arch.get("factory"))
        if not trust_code:
            raise CheckpointError(
                f"{where}: the generator is built by code ({spec!r}), which is imported only on request: "
                "pass --trust-code (trust_code=True in Python) if you trust its source"
            )
        kwargs = arch.get("kwargs") or {}
        if not isinstance(kwargs, dict):
            raise CheckpointError(f"{where}: arch.kwargs must be an object")
        return load_factory(spec, kwargs)
    raise CheckpointError(f"{where}: unknown generator kind {kind!r} (expected vae or dcgan)")


def _vae_config(arch: dict[str, Any], where: str) -> VAEConfig:
    """A VAE's config; sidecars older than the learned prior have no ``prior`` field and mean "none"."""
    cfg: VAEConfig = _from_dict(VAEConfig, arch, where)
    if cfg.prior not in PRIORS:
        raise CheckpointError(f"{where}: arch.prior {cfg.prior!r} is not a known prior kind ({', '.join(PRIORS)})")
    if cfg.prior == "flow" and (cfg.prior_layers < 1 or cfg.prior_hidden < 1):
        raise CheckpointError(f"{where}: a flow prior needs arch.prior_layers and arch.prior_hidden >= 1")
    return cfg


def build_classifier(arch: dict[str, Any], where: str = "arch") -> AttributeClassifier:
    return AttributeClassifier(_from_dict(ClassifierConfig, arch, where))


def load_factory(spec: str, kwargs: dict[str, Any]) -> nn.Module:
    """Import ``module:factory`` and call it; the result must obey the generator contract (``unlearn.byo``)."""
    from feature_unlearn.unlearn import byo  # byo builds on this package

    model = byo.build(spec, "--model", kwargs)
    byo.check_generator_contract(model, f"factory {spec!r}")
    return model


def z_dim_of(g: nn.Module) -> int:
    """The latent width of a generator (the contract's ``z_dim`` attribute)."""
    return int(g.z_dim)  # type: ignore[arg-type]


def check_generator(g: nn.Module, where: str = "generator") -> tuple[int, int, int]:
    """Run the generator contract on two random latents; returns the image shape (C, H, W)."""
    from feature_unlearn.unlearn import byo

    return byo.check_generator_contract(g, where)
