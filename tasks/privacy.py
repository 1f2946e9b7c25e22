"""Differentially private fine-tuning (`finetune.privacy`): DP-SGD with Opacus.

Each optimizer step draws its batch by Poisson sampling (every training row independently, with probability
batch_size / rows), clips each row's gradient to `max_grad_norm`, adds Gaussian noise of `noise_multiplier` times
that norm and averages over the expected batch size. Opacus's accountant adds up what each step spends; the noise is
the smallest that keeps `epochs` of such steps within (epsilon, delta), and training stops rather than take a step
past them. What this covers: the saved model (its weights and its head) and whatever is computed from it later.
What it does not: anything else that reads the training rows (docs/privacy.md lists them), which is why
`tasks.config` refuses, at params load, the settings that would train on rows outside the accountant's count.

Opacus computes per-row gradients for torch's layers; peft's LoRA matrices are such layers. peft's IA3 keeps its
scaling vector in a ParameterDict under the layer that uses it, which Opacus's own walk would hook (a module whose
forward never runs): `AdapterHooks` hooks the IA3 layer itself, and `ia3_grad_sample` gives its per-row gradient."""

from __future__ import annotations

import math
import typing
import warnings
from dataclasses import asdict, dataclass

import torch

from tasks.config import NOT_PRIVATE, PrivacyParams, Strategy
from tasks.errors import ParamsError

# Opacus's notes that are expected here: the first adapted layer's inputs need no gradient (the backbone below it is
# frozen), and RDP's best order at the edge of Opacus's list (the bound is valid, a little loose; `prv` is tighter)
warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients", category=UserWarning)
warnings.filterwarnings("ignore", message="Optimal order is the largest alpha", category=UserWarning)

# tasks.config refuses the others at params load, each with its reason
PRIVATE_STRATEGIES = tuple(name for name in typing.get_args(Strategy) if name not in NOT_PRIVATE)
BUDGET_TOLERANCE = 0.01  # Opacus's search for the noise stops this close to the target epsilon


@dataclass(frozen=True)
class Budget:
    """The DP-SGD settings of one training run, fixed before its first step."""

    epsilon: float  # the target
    delta: float
    max_grad_norm: float  # each row's gradient is clipped to this L2 norm
    noise_multiplier: float  # noise standard deviation, in units of max_grad_norm
    sample_rate: float  # each row's chance to be in a step's batch
    steps: int  # every step the budget allows: epochs x steps per epoch
    steps_per_epoch: int
    accountant: str  # "rdp" or "prv": Opacus's accountant that adds up the steps

    def record(self, spent: float, steps_taken: int) -> dict:
        """What a trained version carries (tags, the run summary): the settings and the epsilon it spent."""
        return {**asdict(self), "spent_epsilon": spent, "steps_taken": steps_taken}


def spent_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: str) -> float:
    """The epsilon that Opacus's `accountant` gives `steps` DP-SGD steps at these settings."""
    from opacus.accountants import create_accountant

    counted = create_accountant(accountant)
    counted.history = [(noise_multiplier, sample_rate, steps)]
    return float(counted.get_epsilon(delta))


def plan(cfg: PrivacyParams, rows: int, batch_size: int, epochs: int) -> Budget:
    """The budget for `epochs` passes over `rows` training rows in batches of `batch_size` on average: the noise
    is `cfg.noise_multiplier` when given (refused when it would spend more than `cfg.epsilon`), else the smallest
    that Opacus finds within the budget."""
    from opacus.accountants.utils import get_noise_multiplier

    if cfg.delta >= 1 / rows:
        raise ParamsError(f"finetune.privacy.delta = {cfg.delta:g} is not below 1 / {rows} training rows: a bound "
                          f"that fails that often allows publishing a row outright; use at most {0.1 / rows:.1g}")
    sample_rate = min(1.0, batch_size / rows)
    per_epoch = math.ceil(rows / batch_size)
    steps = epochs * per_epoch
    noise = cfg.noise_multiplier
    if noise is None:
        noise = get_noise_multiplier(target_epsilon=cfg.epsilon, target_delta=cfg.delta, sample_rate=sample_rate,
                                     steps=steps, accountant=cfg.accountant, epsilon_tolerance=BUDGET_TOLERANCE)
    spend = spent_epsilon(noise, sample_rate, steps, cfg.delta, cfg.accountant)
    if spend > cfg.epsilon:
        raise ParamsError(f"finetune.privacy.noise_multiplier = {noise:g}: {epochs} epochs of {per_epoch} steps "
                          f"on {rows} rows would spend epsilon {spend:.2f}, over the budget {cfg.epsilon:g}; "
                          f"leave noise_multiplier null to find the noise, raise it, or lower finetune.epochs")
    return Budget(cfg.epsilon, cfg.delta, cfg.max_grad_norm, float(noise), sample_rate, steps, per_epoch,
                  cfg.accountant)


class BudgetSpent(RuntimeError):
    """A step past the steps the budget was planned for: the guarantee would no longer hold."""


class PrivateTraining:
    """The Opacus parts of one private training run: per-row gradient hooks on the model, the DP optimizer
    around the run's optimizer, and the accountant that counts every step."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, budget: Budget, batch_size: int):
        from opacus.accountants import create_accountant
        from opacus.optimizers import DPOptimizer

        self.budget = budget
        self.hooks = _adapter_hooks()(model, loss_reduction="mean")
        self.optimizer = DPOptimizer(optimizer, noise_multiplier=budget.noise_multiplier,
                                     max_grad_norm=budget.max_grad_norm, expected_batch_size=batch_size,
                                     loss_reduction="mean")
        self.accountant = create_accountant(budget.accountant)
        self.optimizer.attach_step_hook(self.accountant.get_optimizer_hook_fn(sample_rate=budget.sample_rate))

    @property
    def steps_taken(self) -> int:
        return sum(steps for _, _, steps in self.accountant.history)

    def batches(self, rows: int, seed: int, epoch: int) -> list[torch.Tensor]:
        """This epoch's batches by Poisson sampling, from (seed, epoch) alone so that a resumed run draws the same
        ones; a batch may be empty (its step adds noise only) and rows repeat across batches."""
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        draws = torch.rand(self.budget.steps_per_epoch, rows, generator=generator) < self.budget.sample_rate
        return [torch.nonzero(draw).flatten() for draw in draws]

    def check(self) -> None:
        """Refuse a step beyond the budget's: the noise was found for exactly that many."""
        if self.steps_taken >= self.budget.steps:
            spent = self.spent()
            raise BudgetSpent(f"finetune.privacy: the budget allows {self.budget.steps} steps and all were taken "
                              f"(epsilon {spent:.2f} of {self.budget.epsilon:g} spent); training more would "
                              "exceed it")

    def empty_step(self) -> None:
        """A step whose Poisson draw holds no row: no gradient, only the noise (the accountant counts it)."""
        for param in self.optimizer.params:
            param.grad_sample = torch.zeros((0, *param.shape), device=param.device, dtype=param.dtype)

    def spent(self) -> float:
        return float(self.accountant.get_epsilon(self.budget.delta)) if self.accountant.history else 0.0

    def state_dict(self) -> dict:
        return self.accountant.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.accountant.load_state_dict(state)

    def close(self) -> None:
        """Take the hooks and per-row gradients off the model, leaving it as an ordinary module to save."""
        self.hooks.remove_hooks()
        for param in self.optimizer.params:
            for name in ("grad_sample", "_current_grad_sample", "_forward_counter"):
                if hasattr(param, name):
                    delattr(param, name)

    def record(self) -> dict:
        return self.budget.record(self.spent(), self.steps_taken)


def ia3_grad_sample(layer, activations: list[torch.Tensor], backprops: torch.Tensor) -> dict:
    """Per-row gradients of a peft IA3 layer's scaling vector. The layer computes base(x) * l (attention) or
    base(x * l) (feed-forward), so per row the gradient sums, over the row's tokens, the output's gradient times
    base(x), or x times the gradient that reaches base's input."""
    (x,) = activations[:1]
    scale = layer.ia3_l[layer.active_adapters[0]]
    base = layer.base_layer
    if layer.is_feedforward:
        reaching = backprops.to(base.weight.dtype) @ base.weight
        per_row = torch.einsum("n...i,n...i->ni", x.to(reaching.dtype), reaching)
    else:
        with torch.no_grad():
            out = base(x)
        per_row = torch.einsum("n...o,n...o->no", backprops.to(out.dtype), out)
    return {scale: per_row.reshape(len(per_row), *scale.shape).to(scale.dtype)}


_HOOKS = None


def _adapter_hooks():
    """Opacus's GradSampleHooks, which also hook peft's IA3 layers (once per process: registration is global)."""
    global _HOOKS
    if _HOOKS is not None:
        return _HOOKS
    from opacus.grad_sample import GradSampleHooks, register_grad_sampler
    from opacus.utils.module_utils import trainable_parameters
    from peft.tuners.ia3.layer import Linear as IA3Linear

    register_grad_sampler(IA3Linear)(ia3_grad_sample)

    class AdapterHooks(GradSampleHooks):
        def iterate_submodules(self, module):
            if isinstance(module, IA3Linear):  # its trainable vector is in a child ParameterDict
                yield module
                return
            yield from super().iterate_submodules(module)

        def capture_activations_hook(self, module, forward_input, _forward_output):
            if not isinstance(module, IA3Linear):
                return super().capture_activations_hook(module, forward_input, _forward_output)
            # Opacus's own check looks for trainable weights on the module itself, not its children
            if not (module.training and torch.is_grad_enabled() and self.hooks_enabled):
                return
            if not hasattr(module, "activations"):
                module.activations = []
            module.activations.append([t.detach() for t in forward_input])
            for _, param in trainable_parameters(module):
                param._forward_counter += 1

    _HOOKS = AdapterHooks
    return _HOOKS
