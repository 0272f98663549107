"""Sampling planners over action sequences (CEM, MPPI) and the receding-horizon agent that uses them.

A planner knows nothing about world models: :meth:`Planner.plan` takes a ``rollout`` callable
(actions [S, H, A] -> predicted states [S, H, ...]) and a ``cost`` callable (predicted states ->
[S]). The caller encodes the start and the goal once and closes over them, so one planning call
costs ``iterations`` batched rollouts and nothing per sample. All tensors stay on the device;
the loop has no host syncs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from jepa.single_threaded import run_single_threaded

Rollout = Callable[[torch.Tensor], torch.Tensor]
Cost = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Plan:
    """The best action sequence found [H, A], its cost, and the sampling mean to warm-start from."""

    actions: torch.Tensor
    cost: torch.Tensor
    mean: torch.Tensor


class Planner(Protocol):
    horizon: int
    action_dim: int
    low: torch.Tensor
    high: torch.Tensor

    def plan(self, rollout: Rollout, cost: Cost, init: torch.Tensor | None = None) -> Plan: ...


class SamplingPlanner:
    """Shared machinery: bounds, seeding, sampling around a mean, keeping the best sequence seen.

    With ``repeat`` r > 1 the free variables are ceil(H / r) action values, each held for r steps: a
    lower-dimensional search whose random samples travel far, which finds detours (a door) that
    per-step white noise, averaging out, does not.

    Every iteration evaluates ``samples`` sequences, the current mean (clamped to the bounds) among
    them, so the returned plan is never worse than the warm start.

    With ``workers`` > 1 (on CPU) the samples are evaluated in that many parts on as many threads, each
    part's operations on one thread: a world model's many small operations on a few hundred samples
    share two cores better that way than split inside each operation (16-22 % faster per planning
    call with two, README). Costs are per sample, so the parts give the costs of the whole batch.
    """

    def __init__(self, *, horizon: int, action_dim: int, low: float | torch.Tensor, high: float | torch.Tensor,
                 samples: int = 200, iterations: int = 20, elites: int = 20, init_std: float = 1.0,
                 min_std: float = 0.05, repeat: int = 1, seed: int = 0, device: torch.device | str = "cpu",
                 workers: int = 1) -> None:
        if repeat < 1:
            raise ValueError(f"repeat must be >= 1, got {repeat}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if horizon < 1 or action_dim < 1 or iterations < 1:
            raise ValueError("horizon, action_dim and iterations must be >= 1")
        if samples < 2 or not 1 <= elites <= samples:
            raise ValueError(f"need samples >= 2 and 1 <= elites <= samples, got samples={samples}, elites={elites}")
        if init_std <= 0 or min_std < 0:
            raise ValueError("init_std must be > 0 and min_std >= 0")
        self.horizon, self.action_dim = horizon, action_dim
        self.samples, self.iterations, self.elites = samples, iterations, elites
        self.init_std, self.min_std = init_std, min_std
        self.repeat = repeat
        self.knots = -(-horizon // repeat)  # free action values; each is held for ``repeat`` steps
        self.device = torch.device(device)
        self.low = torch.as_tensor(low, dtype=torch.float32, device=self.device).expand(action_dim).clone()
        self.high = torch.as_tensor(high, dtype=torch.float32, device=self.device).expand(action_dim).clone()
        if not bool((self.low < self.high).all()):
            raise ValueError(f"action bounds need low < high, got low={self.low.tolist()} high={self.high.tolist()}")
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.workers = workers if self.device.type == "cpu" else 1

    def evaluate(self, rollout: Rollout, cost: Cost, actions: torch.Tensor) -> torch.Tensor:
        """cost(rollout(actions)) -> [S], in ``workers`` parts on as many threads, each with one intra-op thread
        (:func:`run_single_threaded`)."""
        if self.workers == 1:
            return cost(rollout(actions))
        parts = [lambda part=part: cost(rollout(part)) for part in actions.chunk(self.workers)]
        return torch.cat(run_single_threaded(parts, self.workers))

    def check_actions(self, actions: torch.Tensor, what: str) -> None:
        """Refuse a sequence of the wrong shape or outside the bounds (a clear error, not a silent clamp)."""
        if actions.ndim != 2 or actions.shape[1] != self.action_dim:
            raise ValueError(f"{what} must have shape [H, {self.action_dim}], got {tuple(actions.shape)}")
        if actions.shape[0] > self.horizon:
            raise ValueError(f"{what} has {actions.shape[0]} steps, more than the horizon {self.horizon}")
        a = actions.to(self.low.device)
        if not bool(torch.isfinite(a).all()) or bool((a < self.low - 1e-6).any() | (a > self.high + 1e-6).any()):
            raise ValueError(f"{what} has values outside the action bounds [{self.low.tolist()}, {self.high.tolist()}]")

    def initial_mean(self, init: torch.Tensor | None) -> torch.Tensor:
        """The warm start padded with zeros (clamped into the bounds) to the horizon."""
        mean = torch.zeros(self.knots, self.action_dim, device=self.device).clamp(self.low, self.high)
        if init is not None:
            self.check_actions(init, "init")
            knots = init[:: self.repeat].to(self.device, torch.float32)
            mean[: knots.shape[0]] = knots
        return mean

    def expand(self, knots: torch.Tensor) -> torch.Tensor:
        """Knot values [..., K, A] -> per-step actions [..., H, A] (each held ``repeat`` steps)."""
        if self.repeat == 1:
            return knots
        return knots.repeat_interleave(self.repeat, dim=-2)[..., : self.horizon, :]

    def plan(self, rollout: Rollout, cost: Cost, init: torch.Tensor | None = None) -> Plan:
        mean = self.initial_mean(init)
        std = torch.full_like(mean, self.init_std)
        samples = torch.empty(self.samples, self.knots, self.action_dim, device=self.device)
        best = mean.clone()
        best_cost = torch.full((), float("inf"), device=self.device)
        for _ in range(self.iterations):
            torch.randn(samples.shape, generator=self.generator, device=self.device, out=samples)
            samples.mul_(std).add_(mean)
            samples[0] = mean
            samples.clamp_(self.low, self.high)
            costs = self.evaluate(rollout, cost, self.expand(samples))
            if costs.shape != (self.samples,):
                raise ValueError(f"cost must return one value per sample [{self.samples}], got {tuple(costs.shape)}")
            i = torch.argmin(costs)
            better = costs[i] < best_cost
            best = torch.where(better, samples[i], best)
            best_cost = torch.where(better, costs[i], best_cost)
            elite_costs, idx = torch.topk(costs, self.elites, largest=False)
            mean, std = self.update(samples[idx], elite_costs, mean, std)
            std = std.clamp_min(self.min_std)
        return Plan(actions=self.expand(best), cost=best_cost, mean=self.expand(mean))

    def update(self, elites: torch.Tensor, costs: torch.Tensor, mean: torch.Tensor, std: torch.Tensor):
        raise NotImplementedError


class CEM(SamplingPlanner):
    """Cross-entropy method: refit a diagonal Gaussian to the ``elites`` lowest-cost sequences each iteration."""

    def update(self, elites, costs, mean, std):
        return elites.mean(dim=0), elites.std(dim=0)


class MPPI(SamplingPlanner):
    """Model-predictive path integral: the mean moves to the elites' average weighted by exp(-cost / temperature).

    Costs are standardised over the elites first, so ``temperature`` does not depend on the cost's scale.
    """

    def __init__(self, *, horizon: int, action_dim: int, low: float | torch.Tensor, high: float | torch.Tensor,
                 samples: int = 200, iterations: int = 20, elites: int = 20, init_std: float = 1.0,
                 min_std: float = 0.05, repeat: int = 1, seed: int = 0, device: torch.device | str = "cpu",
                 workers: int = 1, temperature: float = 0.5) -> None:
        super().__init__(horizon=horizon, action_dim=action_dim, low=low, high=high, samples=samples,
                         iterations=iterations, elites=elites, init_std=init_std, min_std=min_std, repeat=repeat,
                         seed=seed, device=device, workers=workers)
        if temperature <= 0:
            raise ValueError("temperature must be > 0")
        self.temperature = temperature

    def update(self, elites, costs, mean, std):
        z = (costs - costs.min()) / (costs.std() + 1e-8)
        w = torch.softmax(-z / self.temperature, dim=0).view(-1, 1, 1)
        new_mean = (w * elites).sum(dim=0)
        new_std = (w * (elites - new_mean) ** 2).sum(dim=0).sqrt()
        return new_mean, new_std


class WorldModel(Protocol):
    """What an agent plans with: observations -> states, and batched imagined futures from one state."""

    def encode(self, obs: torch.Tensor) -> torch.Tensor: ...

    def rollout(self, start: torch.Tensor, actions: torch.Tensor, *, last_only: bool = False) -> torch.Tensor:
        """start [1, ...], actions [S, H, A] -> predicted states [S, H', ...] (H' = H / the model's step), or
        only the last of them [S, 1, ...] with ``last_only``."""
        ...


StateCost = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (predicted [S, H, ...], goal [1, ...]) -> [S]


def final_distance(p: int = 1) -> StateCost:
    """Energy of the last predicted state: mean |pred - goal|^p over its features (p=1: L1, as the reference)."""

    def cost(pred: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        diff = (pred[:, -1] - goal).abs().flatten(1)
        return diff.pow(p).mean(dim=1) if p != 1 else diff.mean(dim=1)

    return cost


def summed_distance(p: int = 1) -> StateCost:
    """Energy summed over every predicted step (rewards getting there early)."""

    def cost(pred: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        diff = (pred - goal.unsqueeze(1)).abs().flatten(2)
        return (diff.pow(p) if p != 1 else diff).mean(dim=2).sum(dim=1)

    return cost


def standing_still(planner: Planner, steps: int) -> torch.Tensor:
    """One sequence of ``steps`` zero actions [1, steps, A], clamped to the planner's bounds."""
    zeros = torch.zeros(1, steps, planner.action_dim, device=planner.low.device)
    return zeros.clamp(planner.low, planner.high)


class PlanningAgent:
    """Receding-horizon control: plan, execute the first ``replan_every`` actions, replan warm-started
    from the rest of the previous plan (shifted, zero-padded).

    With ``episode_steps`` the energy is taken at the episode's last step once it is within the
    horizon: a final-state energy alone is indifferent to *when* the goal is reached, so a receding
    horizon keeps postponing arrival to the horizon's end; counting down to the episode's end removes
    that (an episode is judged on its final state).

    ``final_only`` says the cost reads only the last predicted state (``final_distance``,
    ``latent_cost("final")``): the model then imagines only as far as the horizon asks and returns
    only that state, instead of every step of every sample (the grid world model's call at the
    reference budget spent a fifth of its time copying those, README).

    ``further`` (a planner with a longer horizon) is for local minima of the final-state energy: with
    the goal behind a wall and the door further away than the horizon, every plan that heads for the
    door ends further from the goal than standing still, so the agent waits at the wall. Where the best
    plan does not end at least ``stuck_margin`` (a fraction) below the energy of standing still, the
    agent plans again with ``further``, and keeps planning with it for as many steps as that plan spans
    (``escalations`` counts how often it got stuck): a replan at the short horizon halfway along the
    detour would head back to the wall.

    With ``check_progress`` the agent also looks further where the model's last plan did not keep its
    promise: that plan was to end ``stuck_margin`` below standing still, yet after its executed steps the
    real state's energy of standing still has not fallen by that margin. A model that imagines the dot
    sliding along a wall it is pushed into (README) rates such plans well below standing still at every
    call, so the first test never fires; what really happened is the one thing the model cannot imagine.

    ``stall_penalty`` makes the agent remember where it stalled and plan away from there. At every call
    with more than a horizon of the episode left, the energy of standing still one step is measured from
    the real state; where it has not fallen ``stuck_margin`` below the previous call's, the state is a
    stall. Every later plan pays ``stall_penalty * relu(E_k - d(end, s_k))`` for each stall ``s_k``: its
    end state ``d`` away from the stall (the energy's distance) costs more the closer it is, up to the
    stall's own energy ``E_k`` to the goal, so ending at a stall costs twice its energy and the goal
    itself nothing more. A model that imagines the dot passing through the wall it is pressed against
    keeps choosing that wall; the penalty spends what the dot really did there against the imagination.
    """

    def __init__(self, model: WorldModel, planner: Planner, cost: StateCost, *, replan_every: int = 1,
                 episode_steps: int | None = None, final_only: bool = False, further: Planner | None = None,
                 stuck_margin: float = 0.05, check_progress: bool = False, stall_penalty: float = 0.0) -> None:
        if not 1 <= replan_every <= planner.horizon:
            raise ValueError(f"replan_every must be in [1, horizon={planner.horizon}], got {replan_every}")
        if episode_steps is not None and episode_steps < 1:
            raise ValueError(f"episode_steps must be >= 1, got {episode_steps}")
        if further is not None and further.horizon <= planner.horizon:
            raise ValueError(f"the stuck planner's horizon ({further.horizon}) must exceed {planner.horizon}")
        if not 0 <= stuck_margin < 1:
            raise ValueError(f"stuck_margin must be in [0, 1), got {stuck_margin}")
        if check_progress and further is None:
            raise ValueError("check_progress needs a planner to look further with (further=)")
        if stall_penalty < 0:
            raise ValueError(f"stall_penalty must be >= 0, got {stall_penalty}")
        self.model, self.planner, self.cost, self.replan_every = model, planner, cost, replan_every
        self.episode_steps, self.final_only = episode_steps, final_only
        self.further, self.stuck_margin, self.check_progress = further, stuck_margin, check_progress
        self.stall_penalty = stall_penalty
        self.steps = 0
        self.goal: torch.Tensor | None = None
        self.queue: list[torch.Tensor] = []
        self.previous: torch.Tensor | None = None
        self.plan_seconds: list[float] = []
        self.escalations, self.further_until = 0, 0
        self.promised: float | None = None  # standing still's energy when the executing plan was chosen
        self.stalls: list[tuple[torch.Tensor, float]] = []  # (predicted state, its energy) where progress stalled
        self.last_energy: float | None = None

    @torch.no_grad()
    def reset(self, goal_obs: torch.Tensor) -> None:
        """Encode the goal image once for the whole episode."""
        self.goal = self.model.encode(goal_obs.unsqueeze(0))
        self.queue, self.previous, self.plan_seconds, self.steps = [], None, [], 0
        self.escalations, self.further_until = 0, 0
        self.promised = None
        self.stalls, self.last_energy = [], None

    def objective(self, planner: Planner, start: torch.Tensor, horizon: int) -> tuple[Rollout, Cost]:
        """The rollout and energy one planning call optimises, up to ``horizon`` steps (the episode's end)."""
        goal, stalls = self.goal, list(self.stalls)

        def stalled(end: torch.Tensor) -> torch.Tensor | float:
            """The stall penalty of plans ending in ``end`` (zero without stalls)."""
            return sum((self.stall_penalty * torch.relu(energy - self.cost(end, state)) for state, energy in stalls),
                       start=0.0)

        if self.final_only:
            return ((lambda a: self.model.rollout(start, a[:, :horizon], last_only=True)),
                    (lambda p: self.cost(p, goal) + stalled(p)))

        def cost(pred: torch.Tensor) -> torch.Tensor:
            """The energy of the predicted states up to the episode's end (pred may be coarser than steps)."""
            last = -(-horizon * pred.shape[1] // planner.horizon)
            return self.cost(pred[:, :last], goal) + stalled(pred[:, last - 1:last])

        return (lambda a: self.model.rollout(start, a)), cost

    def note_stall(self, start: torch.Tensor) -> None:
        """Remember where the agent is as a stall if the energy of standing still one step from there is not
        ``stuck_margin`` below the last call's. The stall is kept as that predicted state (averaged over an
        ensemble's members), shaped as the goal: plans end in predicted states too, and a prediction sits
        further from its own encoding than from other predictions (the measured 14 of 23 long detours
        against 10 with the encoding, README)."""
        still = self.model.rollout(start, standing_still(self.planner, 1), last_only=True)
        energy = float(self.cost(still, self.goal)[0])
        if self.last_energy is not None and energy > (1 - self.stuck_margin) * self.last_energy:
            self.stalls.append((still[0, -1].reshape(-1, *self.goal.shape[1:]).mean(0, keepdim=True), energy))
        self.last_energy = energy

    def plan_with(self, planner: Planner, start: torch.Tensor,
                  remaining: int | None) -> tuple[Plan, Callable[[], torch.Tensor]]:
        """``planner``'s plan from ``start`` (up to ``remaining`` steps, None: no episode end), warm-started
        from the rest of the previous plan, and a function giving the energy of standing still (zero actions,
        clamped to the bounds) under the same objective."""
        horizon = planner.horizon if remaining is None else min(planner.horizon, max(remaining, 1))
        rollout, cost = self.objective(planner, start, horizon)
        init = self.previous[self.replan_every:][: planner.horizon] if self.previous is not None else None

        def still() -> torch.Tensor:
            return cost(rollout(standing_still(planner, planner.horizon)))[0]

        return planner.plan(rollout, cost, init=init), still

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        if self.goal is None:
            raise RuntimeError("call reset(goal_obs) before act()")
        if not self.queue:
            start_time = time.perf_counter()
            start = self.model.encode(obs.unsqueeze(0))
            remaining = None if self.episode_steps is None else self.episode_steps - self.steps
            if self.stall_penalty and (remaining is None or remaining > self.planner.horizon):
                self.note_stall(start)
            if self.further is not None and self.steps < self.further_until:
                plan, _ = self.plan_with(self.further, start, remaining)
                self.promised = None
            else:
                plan, still = self.plan_with(self.planner, start, remaining)
                if self.further is not None and (remaining is None or remaining > self.planner.horizon):
                    standing = float(still())
                    broken = self.promised is not None and standing > (1 - self.stuck_margin) * self.promised
                    self.promised = standing if self.check_progress else None
                    if float(plan.cost) > (1 - self.stuck_margin) * standing or broken:
                        plan, _ = self.plan_with(self.further, start, remaining)
                        self.escalations += 1
                        self.further_until = self.steps + self.further.horizon
                        self.promised = None
            actions = plan.actions.cpu()
            self.plan_seconds.append(time.perf_counter() - start_time)
            self.previous = actions
            self.queue = list(actions[: self.replan_every])
        self.steps += 1
        return self.queue.pop(0)
