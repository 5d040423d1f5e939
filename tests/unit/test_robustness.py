"""The attack suite's pieces: PGD budgets, the seed-only statistics, judging by another network."""

from __future__ import annotations

import pytest
import torch

from feature_unlearn.unlearn.attack import pgd
from feature_unlearn.unlearn.configs import AttackConfig
from feature_unlearn.unlearn.models import AttributeClassifier, ClassifierConfig
from feature_unlearn.unlearn.robustness import seed_only, wilson
from feature_unlearn.unlearn.stats import gap_interval


def _classifier(seed: int) -> AttributeClassifier:
    torch.manual_seed(seed)
    return AttributeClassifier(ClassifierConfig(kind="cnn", channels=1, heads={"f": 2}, width=4)).eval()


def _gen(z: torch.Tensor) -> torch.Tensor:
    return torch.tanh(z[:, :1, None, None].expand(-1, 1, 32, 32) * torch.linspace(-1, 1, 32))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_stays_within_its_budget_and_raises_the_attacker_logit(norm: str) -> None:
    attacker = _classifier(0)
    z0 = torch.randn(32, 6, generator=torch.Generator().manual_seed(1))
    cfg = AttackConfig(eps=0.3, steps=10)
    z = pgd(_gen, attacker, "f", z0, cfg, norm)
    delta = z - z0
    if norm == "linf":
        assert delta.abs().max() <= 0.3 + 1e-6
    else:
        assert delta.norm(dim=1).max() <= 0.3 * 6**0.5 + 1e-5
    with torch.no_grad():
        assert attacker(_gen(z))["f"].mean() > attacker(_gen(z0))["f"].mean()


def test_unknown_norm_is_refused() -> None:
    with pytest.raises(ValueError, match="norm 'l1'"):
        pgd(_gen, _classifier(0), "f", torch.zeros(2, 6), AttackConfig(), "l1")


def test_wilson_interval_brackets_the_rate_and_narrows_with_n() -> None:
    lo, hi = wilson(10, 100)
    assert lo < 0.1 < hi and hi - lo > 0.1
    lo2, hi2 = wilson(100, 1000)
    assert lo2 < 0.1 < hi2 and hi2 - lo2 < hi - lo
    assert wilson(0, 50)[0] == 0.0


def test_a_gap_interval_says_whether_a_miss_is_beyond_the_noise_of_the_starts() -> None:
    # mnist-dcgan's replay against its oracle, one fit: 7.0% vs 5.5% at 128 starts, 9.6% vs 2.5% at 512
    lo, hi = gap_interval(9 / 128, 128, 7 / 128, 128)
    assert lo < 0 < 0.015 < hi  # 1.6 points over at 128 starts: within noise either way
    lo, hi = gap_interval(49 / 512, 512, 13 / 512, 512)
    assert 0.04 < lo < 0.0703 < hi < 0.11  # 7 points over at 512 starts: a real miss, interval around it
    lo, hi = gap_interval(0.0, 512, 0.0, 512)
    assert lo < 0 < hi and hi - lo < 0.02  # two zeros still leave an interval, narrowing with n


def test_seed_only_expected_seeds_is_one_over_the_rate() -> None:
    s = seed_only(25, 10_000)
    assert s["expected_seeds"] == pytest.approx(400) and s["interval"][0] < 400 < s["interval"][1]
    none = seed_only(0, 3000)
    assert none["expected_seeds"] is None and none["at_least"] == 1000


class _Brightness(torch.nn.Module):
    """A judge that sees the feature in bright images: unrelated to the attacker's weights."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"f": x.mean(dim=(1, 2, 3)) - 0.5}


def test_the_suite_judges_with_the_other_network_and_reports_every_model() -> None:
    from feature_unlearn.unlearn.robustness import suite

    attacker, judge = _classifier(0), _Brightness()
    dark = lambda z: -torch.ones(len(z), 1, 32, 32) + 0 * z.sum(1)[:, None, None, None]  # noqa: E731 (never bright)
    models = {"original": _gen, "oracle": dark}
    cfg = AttackConfig(eps=0.5, steps=5, starts=16, batch=16)
    result, found = suite(models, attacker, judge, "f", 6, cfg, {"original": (5, 100), "oracle": (0, 100)})  # type: ignore[arg-type]
    assert result["verdict"] == "labeller->auditor" and set(result["pgd"]) == {"linf", "l2"}
    assert result["pgd"]["linf"]["labeller->auditor"]["oracle"] == 0.0  # a judge that never sees it
    assert result["pgd"]["linf"]["auditor->auditor"]["oracle"] == 0.0
    assert set(result["replay"]) == {"original", "oracle"} and found["original"].shape == (16, 6)
    assert result["seed_only"]["original"]["expected_seeds"] == pytest.approx(20)


class _LeftHalfCheck(torch.nn.Module):
    """A stand-in image check that only looks at the left half: flags it when bright (logit 10·mean, τ = 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("tau", torch.zeros(1))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return 10 * x[..., :16].mean(dim=(1, 2, 3))[:, None]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        score = self.logits(x).amax(dim=1)
        return score > self.tau, score


class _Mean(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"f": 10 * (x.mean(dim=(1, 2, 3)) - 0.2)}


def _halves(z: torch.Tensor) -> torch.Tensor:
    """Left half brightness tanh(z0), right half tanh(z1): [N, 1, 32, 32]."""
    left = torch.tanh(z[:, 0])[:, None, None, None].expand(-1, 1, 32, 16)
    right = torch.tanh(z[:, 1])[:, None, None, None].expand(-1, 1, 32, 16)
    return torch.cat([left, right], dim=3)


def test_the_attack_on_a_defended_model_is_adaptive_and_judged_on_what_ships() -> None:
    from feature_unlearn.unlearn.attack import attack, judged
    from feature_unlearn.unlearn.robustness import Defended, _attacked

    defended = Defended(_halves, _LeftHalfCheck())  # type: ignore[arg-type]
    z = torch.tensor([[2.0, 2.0], [-2.0, 2.0]])
    assert torch.equal(defended(z)[0], torch.zeros(1, 32, 32)) and torch.equal(defended(z)[1], _halves(z)[1])
    cfg = AttackConfig(eps=2.0, steps=10, starts=64, batch=64)
    naive = attack(defended.raw, _Mean(), "f", 2, cfg, "linf")  # type: ignore[arg-type]
    adaptive = attack(*_attacked(defended, _Mean()), "f", 2, cfg, "linf")  # type: ignore[arg-type]
    naive_success = float(judged(defended, _Mean(), "f", naive).float().mean())  # type: ignore[arg-type]
    adaptive_success = float(judged(defended, _Mean(), "f", adaptive).float().mean())  # type: ignore[arg-type]
    # the naive attack brightens both halves and is blanked; the adaptive one keeps the left half dark
    assert naive_success < 0.2 and adaptive_success > naive_success + 0.4, (naive_success, adaptive_success)
