"""Trains both sides of a `ParityCase` for N steps with one recipe and compares them.

Ours is exactly what `finetune.trainer.finetune_once` builds: `create_optimizer` (Keras AdamW,
decay exclusions by name, warmup + linear decay) and `TrainStep` (global-norm clip of the
gradient). The reference is torch.optim.AdamW with parameter groups, transformers'
`get_linear_schedule_with_warmup` and torch.nn.utils.clip_grad_norm_, configured to OUR recipe
where the defaults differ (`Recipe.reference_settings` says how; the tool prints it):

  epsilon      Keras adds epsilon to sqrt(v) and applies bias correction to the step size
               (lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)); torch adds it to the
               bias-corrected sqrt(v / (1 - b2^t)). Algebraically the same update when torch's
               eps at step t is eps / sqrt(1 - b2^t), which the reference sets before each step.
  weight decay the reference decays exactly the tensors our optimizer decays (asked of it,
               per tied variable), 0.01 decoupled (lr * wd * w), as AdamW does on both sides.
  epsilon 1e-6 (BERT's; transformers' default is 1e-8), bias correction on both sides.

Bars (float32): every step's loss within 1e-5 relative, every weight within 1e-5 absolute
after the last step. Drift columns (no bar): the largest relative change of OUR per-step
losses under mixed_bfloat16, and with jit_compile=True, against our float32 run.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Dict, List, Optional, Sequence, Tuple

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import numpy as np
import tensorflow as tf

from finetune.losses import task_loss
from finetune.config import WARMUP_FRACTION
from tfmodels.optimization import create_optimizer
from tfmodels.training import TrainStep
from tools.parity.cases import ParityCase, Tie

LOSS_BAR = 1e-5     # relative, every step
WEIGHT_BAR = 1e-5   # absolute, every weight after the last step
# Weights with an exactly-zero gradient (ParityCase.gradient_free) must stay this close to their
# start on both sides: 20 Adam steps of a weight that learns move it ~steps x lr (>= 1e-3).
GRADIENT_FREE_BAR = 1e-4


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The fine-tuning optimisation of finetune.trainer.FinetuneConfig's defaults.

    schedule_steps: the length of the run the warmup/decay schedule is laid over; the harness
      trains its first `steps`. BERT: 20 of 20 (10% warmup = 2 steps, then linear decay to 0
      at step 20). GPT-1: 0.2% warmup needs a 1,000-step run for 2 warmup steps; its first 20
      steps are compared.
    """

    learning_rate: float
    schedule_steps: int
    warmup_fraction: float
    weight_decay: float = 0.01
    epsilon: float = 1e-6
    beta_1: float = 0.9
    beta_2: float = 0.999
    clip_norm: float = 1.0
    lm_weight: float = 0.5

    @property
    def warmup_steps(self) -> int:
        return int(round(self.warmup_fraction * self.schedule_steps))  # as finetune_once

    def describe(self) -> str:
        return (f"AdamW lr {self.learning_rate:g}, betas ({self.beta_1}, {self.beta_2}), eps "
                f"{self.epsilon:g}, weight decay {self.weight_decay:g} (not on LayerNorm / "
                f"biases), {self.warmup_steps} warmup steps then linear decay to 0 at step "
                f"{self.schedule_steps}, global-norm clip {self.clip_norm:g}")


def recipe_for(case: ParityCase, steps: int) -> Recipe:
    if case.input_format == "bert":
        return Recipe(case.learning_rate, steps, WARMUP_FRACTION["bert"])
    return Recipe(case.learning_rate, 1000, WARMUP_FRACTION["gpt"])


# Printed once by the tool: how the torch reference is set to our recipe, and what is left.
RECIPE_NOTES = """\
Reference optimizer: torch.optim.AdamW + transformers.get_linear_schedule_with_warmup +
torch.nn.utils.clip_grad_norm_(1.0), set to OUR recipe where transformers' defaults differ:
- epsilon 1e-6 (BERT's; torch and transformers default to 1e-8), applied at Keras' place:
  torch's eps before step t is 1e-6 / sqrt(1 - beta_2^t), which makes torch's
  m_hat / (sqrt(v_hat) + eps_t) equal Keras' lr-folded bias correction m / (sqrt(v) + eps).
- weight decay 0.01, decoupled, on exactly the tensors our optimizer decays (asked of it per
  variable): all but LayerNorm gains / betas and biases, embeddings included. transformers'
  Trainer default is weight_decay 0.0; its bias / LayerNorm exclusion picks the same set.
- bias correction on both sides (google-research/bert's AdamWeightDecayOptimizer has none;
  neither side follows it).
- warmup then linear decay to 0, read at the start of each step on both sides (step 0 trains
  at lr 0 when there is warmup); BERT: 10% warmup over a 20-step run, GPT-1: 0.2% over a
  1,000-step run (2 warmup steps) of which the first 20 run.
- left as is: clip_grad_norm_ divides by (norm + 1e-6), tf.clip_by_global_norm by
  max(norm, 1.0): under 1e-6 relative.
"""


# ---- our side -----------------------------------------------------------------------------------

@dataclasses.dataclass
class Trajectory:
    losses: List[float]
    weights: Dict[str, np.ndarray]   # tie name -> our layout
    seconds: float


def run_ours(case: ParityCase, recipe: Recipe, steps: int, policy: str = "float32",
             jit_compile: bool = False) -> Tuple[Trajectory, keras.optimizers.Optimizer, List[Tie]]:
    """Our fine-tuning step, as finetune_once builds it, over the case's batches."""
    start = time.perf_counter()
    model = case.build_ours(dtype=policy)
    optimizer = create_optimizer(
        recipe.learning_rate, total_steps=recipe.schedule_steps,
        warmup_steps=recipe.warmup_steps, decay="linear", weight_decay=recipe.weight_decay,
        epsilon=recipe.epsilon, beta_1=recipe.beta_1, beta_2=recipe.beta_2)
    loss_fn = task_loss(case.task, case.input_format, recipe.lm_weight)
    step = TrainStep(model, optimizer, loss_fn, jit_compile=jit_compile,
                     clip_norm=recipe.clip_norm)
    losses = []
    for batch in case.batches[:steps]:
        metrics = step({k: tf.constant(v) for k, v in batch.items()})
        losses.append(float(metrics["loss"]))
    ties = case.ties(model)
    weights = {tie.name: np.array(tie.ours.numpy(), np.float32) for tie in ties}
    return Trajectory(losses, weights, time.perf_counter() - start), optimizer, ties


# ---- the reference side -------------------------------------------------------------------------

@dataclasses.dataclass
class ReferenceSettings:
    """How the torch optimizer was set up, for the printed output."""

    decayed: List[str]
    not_decayed: List[str]
    differs_from_transformers_rule: List[str]   # tensors where our decay choice differs from
                                                # transformers' Trainer (bias / LayerNorm names)


def transformers_decays(name: str) -> bool:
    """transformers' Trainer rule: no decay on biases and LayerNorm weights (its get_decay_
    parameter_names excludes LayerNorm modules' parameters and names containing "bias";
    GPT-1's LayerNorms are `ln_1` / `ln_2`)."""
    return not ("bias" in name or "LayerNorm" in name or ".ln_" in name)


def reference_settings(ties: Sequence[Tie], optimizer) -> ReferenceSettings:
    decayed, not_decayed = [], []
    for tie in ties:
        # Ask OUR optimizer which variables it decays: the reference must decay the same ones.
        (decayed if optimizer._use_weight_decay(tie.ours) else not_decayed).extend(tie.torch_names)
    differs = sorted(n for n in decayed if not transformers_decays(n)) + sorted(
        n for n in not_decayed if transformers_decays(n))
    return ReferenceSettings(decayed, not_decayed, differs)


def run_reference(case: ParityCase, recipe: Recipe, steps: int, ties: Sequence[Tie],
                  settings: ReferenceSettings, match_epsilon: bool = True,
                  decay_names: Optional[Sequence[str]] = None) -> Trajectory:
    """transformers' model, trained by torch AdamW + LambdaLR + clip_grad_norm_ to our recipe.

    match_epsilon=False / decay_names: deliberately mis-configured references (torch's own
    epsilon placement; a different decay set) that the tests use to show the bars can fail.
    """
    import torch
    from transformers import get_linear_schedule_with_warmup

    start = time.perf_counter()
    module = case.build_reference(ties)
    module.train()  # dropout is 0 everywhere; train mode as in a real run
    params = dict(module.named_parameters())
    decayed = set(settings.decayed if decay_names is None else decay_names)
    groups = [{"params": [p for n, p in params.items() if n in decayed],
               "weight_decay": recipe.weight_decay},
              {"params": [p for n, p in params.items() if n not in decayed],
               "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=recipe.learning_rate,
                                  betas=(recipe.beta_1, recipe.beta_2), eps=recipe.epsilon)
    schedule = get_linear_schedule_with_warmup(optimizer, recipe.warmup_steps,
                                               recipe.schedule_steps)
    losses = []
    for t, batch in enumerate(case.batches[:steps], start=1):
        if match_epsilon:
            for group in optimizer.param_groups:
                group["eps"] = recipe.epsilon / math.sqrt(1.0 - recipe.beta_2 ** t)
        optimizer.zero_grad()
        loss = case.reference_loss(module, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), recipe.clip_norm)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        weights = {tie.name: np.asarray(tie.from_torch(
            [params[n].detach().numpy() for n in tie.torch_names]), np.float32) for tie in ties}
    return Trajectory(losses, weights, time.perf_counter() - start)


# ---- comparison ---------------------------------------------------------------------------------

def max_relative_difference(a: Sequence[float], b: Sequence[float]) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


def max_weight_difference(a: Dict[str, np.ndarray], b: Dict[str, np.ndarray]) -> Tuple[float, str]:
    """(largest absolute difference over all weights, the tensor where it is)."""
    worst = max(a, key=lambda k: float(np.max(np.abs(a[k] - b[k]))))
    return float(np.max(np.abs(a[worst] - b[worst]))), worst


@dataclasses.dataclass
class HeadResult:
    case: ParityCase
    recipe: Recipe
    settings: ReferenceSettings
    ours: Trajectory
    reference: Trajectory
    loss_difference: float
    weight_difference: float
    worst_weight: str
    moved: float                       # largest weight change of the reference from its start
    bf16_drift: Optional[float] = None
    xla_drift: Optional[float] = None

    gradient_free_moved: float = 0.0   # largest move of a gradient-free weight, either side

    @property
    def passed(self) -> bool:
        return (self.loss_difference <= LOSS_BAR and self.weight_difference <= WEIGHT_BAR
                and self.gradient_free_moved <= GRADIENT_FREE_BAR)

    def failure(self) -> str:
        steps = np.abs(np.subtract(self.ours.losses, self.reference.losses))
        first = int(np.argmax(steps / np.maximum(np.abs(self.reference.losses), 1e-12)
                              > LOSS_BAR)) if self.loss_difference > LOSS_BAR else None
        lines = [f"{self.case.name}: max relative loss difference {self.loss_difference:.3g} "
                 f"(bar {LOSS_BAR:g}), max weight difference {self.weight_difference:.3g} at "
                 f"{self.worst_weight} (bar {WEIGHT_BAR:g})"
                 + (f", a gradient-free weight moved {self.gradient_free_moved:.3g} (bar "
                    f"{GRADIENT_FREE_BAR:g})" if self.gradient_free_moved > GRADIENT_FREE_BAR
                    else "")]
        if first is not None:
            lines.append(f"  first step over the bar: {first} (ours {self.ours.losses[first]:.8g},"
                         f" reference {self.reference.losses[first]:.8g})")
        return "\n".join(lines)


def compare_head(case: ParityCase, steps: int = 20, drift: bool = True,
                 match_epsilon: bool = True,
                 decay_names: Optional[Sequence[str]] = None) -> HeadResult:
    """Trains both sides `steps` steps on the case's batches and measures the differences;
    with `drift`, also our mixed_bfloat16 and jit_compile runs against our float32 run."""
    if len(case.batches) < steps:
        raise ValueError(f"{case.name}: {len(case.batches)} batches for {steps} steps")
    recipe = recipe_for(case, steps)
    ours, optimizer, ties = run_ours(case, recipe, steps)
    settings = reference_settings(ties, optimizer)
    reference = run_reference(case, recipe, steps, ties, settings, match_epsilon, decay_names)
    compared = [k for k in ours.weights if k not in case.gradient_free]
    weight_difference, worst = max_weight_difference(
        {k: ours.weights[k] for k in compared}, {k: reference.weights[k] for k in compared})
    moved = max(float(np.max(np.abs(reference.weights[k] - case.initial[k])))
                for k in reference.weights)
    free_moved = max([float(np.max(np.abs(side.weights[k] - case.initial[k])))
                      for k in case.gradient_free for side in (ours, reference)], default=0.0)
    result = HeadResult(case, recipe, settings, ours, reference,
                        max_relative_difference(ours.losses, reference.losses),
                        weight_difference, worst, moved, gradient_free_moved=free_moved)
    if drift:
        bf16, _, _ = run_ours(case, recipe, steps, policy="mixed_bfloat16")
        xla, _, _ = run_ours(case, recipe, steps, jit_compile=True)
        result.bf16_drift = max_relative_difference(bf16.losses, ours.losses)
        result.xla_drift = max_relative_difference(xla.losses, ours.losses)
    return result


# ---- printing -----------------------------------------------------------------------------------

def markdown_table(results: Sequence[HeadResult]) -> str:
    lines = ["| head | steps | max rel. loss diff | max abs. weight diff | weights moved | "
             "pass | bf16 loss drift | XLA loss drift |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        drift = lambda v: "-" if v is None else f"{v:.2e}"
        lines.append(f"| {r.case.name} | {len(r.ours.losses)} | {r.loss_difference:.2e} | "
                     f"{r.weight_difference:.2e} | {r.moved:.2e} | "
                     f"{'pass' if r.passed else 'FAIL'} | {drift(r.bf16_drift)} | "
                     f"{drift(r.xla_drift)} |")
    return "\n".join(lines)


def describe_setup(results: Sequence[HeadResult]) -> str:
    """The per-head reference classes and how the reference optimizer was configured."""
    lines = []
    for r in results:
        s = r.settings
        differs = ", ".join(s.differs_from_transformers_rule) or "none"
        lines.append(f"- {r.case.name}: {r.case.description}; reference {r.case.reference_note}."
                     f" {r.recipe.describe()}. Reference decays {len(s.decayed)} tensors, not "
                     f"{len(s.not_decayed)} (as ours; transformers' Trainer rule differs on: "
                     f"{differs}).")
    return "\n".join(lines)


def library_versions() -> str:
    """The versions the numbers were measured with (the CPU: tools.machine)."""
    versions = [f"tensorflow {tf.__version__}", f"keras {keras.__version__}"]
    try:
        import torch
        import transformers
        versions += [f"torch {torch.__version__} ({torch.get_num_threads()} threads)",
                     f"transformers {transformers.__version__}"]
    except ImportError:
        pass
    return ", ".join(versions)
