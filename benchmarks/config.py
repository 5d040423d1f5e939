"""A run: the user's ``BenchConfig`` (``unlearn-cli bench``'s options, in the installed CLI) and its scale."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Optional

from feature_unlearn.cli.bench import BenchConfig

FOREIGN_LIMIT = 0.2  # cores other processes may use during a measurement before it counts as disturbed
# "default": torch.compile(m) as users write it; "freezing": inductor's inference freezing (constant-folded,
# prepacked weights); "max-autotune": kernels chosen by timing them at compile time.
COMPILE_MODES = ("default", "freezing", "max-autotune")


def compile_name(mode: str) -> str:
    return "torch-compile" + ("" if mode == "default" else f"-{mode}")


COMPILED = tuple(map(compile_name, COMPILE_MODES))
CPU_BACKENDS = ("torch-eager", *COMPILED, "onnxruntime-cpu")  # all run the guarded module


@dataclass(frozen=True)
class Scale:
    """How much each section measures: the full run, the quick smoke run, or a test's tiny one."""

    models: tuple[str, ...] = ()  # () = the zoo's base generators
    batches: tuple[int, ...] = (1, 16, 64, 256)
    skip: tuple[str, ...] = ()  # sections this scale leaves out
    compile_modes: tuple[str, ...] = COMPILE_MODES
    warmup: int = 3  # calls per backend before timing (compilation happens here)
    seconds: float = 2.0  # timed seconds per (model, backend, batch), spread over the rounds
    calls: tuple[int, int] = (15, 400)  # fewest and most timed calls per point
    rounds: int = 5  # contenders alternate round by round in a shuffled order
    overhead_seconds: float = 6.0  # the guard costs ~1 %: telling that from noise takes many calls
    retries: int = 2  # re-time a point other processes disturbed; the least disturbed is kept
    retry_wait_s: float = 10.0
    fit_model: str = "faces-dcgan"
    fit_steps: int = 40
    fit_warmup: int = 5
    fit_batch: int = 64
    ddp_steps: int = 200
    unlearn_models: tuple[str, ...] = ()  # () = the inference models
    fit_overrides: tuple[tuple[str, int], ...] = ()  # FitConfig fields the unlearning table changes
    eval_n: int = 10_000
    # as evaluate's default: at 128 one start is 0.8 pp, and the targets judge gaps of 1-2 pp to the oracle
    # (mnist-dcgan's replay read 7.0% vs 5.5% at 128 starts and 9.6% vs 2.5% at 512, the same run)
    attack_starts: int = 512
    attack_steps: int = 20
    precisions: tuple[str, ...] = ("int8", "bf16")  # reduced precisions exported and timed beside fp32
    gate_samples: int = 10_000  # their quality gate's latents


QUICK = Scale(
    models=("mnist-vae", "mnist-dcgan"),
    batches=(1, 64),
    skip=("memory", "serve"),
    compile_modes=("default",),
    warmup=2,
    seconds=0.3,
    calls=(5, 60),
    rounds=2,
    overhead_seconds=0.6,
    retries=0,
    fit_model="mnist-dcgan",
    fit_steps=4,
    fit_warmup=2,
    ddp_steps=12,
    unlearn_models=("mnist-vae",),
    fit_overrides=(
        ("steps", 20),
        ("steps_per_round", 20),
        ("n_collect", 600),
        ("probe", 200),
        ("pool", 4096),
        ("robust_for", 4),
        ("robust_steps", 2),
    ),  # fmt: skip
    eval_n=500,
    attack_starts=16,
    attack_steps=5,
    gate_samples=2_000,
)


@dataclass(frozen=True)
class Run(BenchConfig):
    """The options of one run and its scale: QUICK with --quick, else the full one (tests pass a tiny one)."""

    scale: Optional[Scale] = None

    @classmethod
    def of(cls, cfg: BenchConfig) -> Run:
        return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)})

    @property
    def s(self) -> Scale:
        return self.scale or (QUICK if self.quick else Scale())

    @property
    def model_names(self) -> tuple[str, ...]:
        from feature_unlearn.unlearn.pretrain.recipes import base_generators

        return self.models or self.s.models or base_generators()

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.batches or self.s.batches)))

    def runs(self, section: str) -> bool:
        return section not in self.skip and section not in self.s.skip

    def as_dict(self) -> dict[str, Any]:
        """The options and the scale as the results JSON holds them (paths as strings, tuples as lists)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "scale"}
        return dict(json.loads(json.dumps(fields | {"scale": vars(self.s)}, default=str)))
