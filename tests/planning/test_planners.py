"""CEM / MPPI / the receding-horizon agent against mock world models with known optima."""

import inspect
import threading

import pytest
import torch

from jepa.planning.planners import CEM, MPPI, PlanningAgent, SamplingPlanner, final_distance, summed_distance


def integrator(start: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """A point that moves by each action: states [S, H, 2]."""
    return start.view(1, 1, -1) + actions.cumsum(dim=1)


def make(kind, **overrides):
    args = dict(horizon=8, action_dim=2, low=-1.0, high=1.0, samples=128, iterations=15, elites=12, seed=0)
    args.update(overrides)
    return kind(**args)


@pytest.mark.parametrize("kind", [CEM, MPPI])
def test_finds_reachable_goal(kind):
    goal = torch.tensor([[5.0, -3.0]])
    start = torch.zeros(1, 2)
    plan = make(kind).plan(lambda a: integrator(start, a), lambda p: final_distance(1)(p, goal))
    assert plan.actions.shape == (8, 2)
    assert float(plan.cost) < 0.1
    assert torch.allclose(integrator(start, plan.actions[None])[0, -1], goal[0], atol=0.3)


@pytest.mark.parametrize("kind", [CEM, MPPI])
def test_bounds_respected_and_unreachable_goal_saturates(kind):
    seen = []

    def rollout(a):
        seen.append((a.min(), a.max()))
        return integrator(torch.zeros(1, 2), a)

    plan = make(kind, low=torch.tensor([-0.5, -1.0]), high=torch.tensor([0.5, 1.0])).plan(
        rollout, lambda p: final_distance(1)(p, torch.tensor([[100.0, 100.0]])))
    assert min(float(lo) for lo, _ in seen) >= -1.0 and max(float(hi) for _, hi in seen) <= 1.0
    assert plan.actions[:, 0].max() <= 0.5 and plan.actions[:, 1].max() <= 1.0
    assert plan.actions[:, 0].sum() > 0.85 * 8 * 0.5 and plan.actions[:, 1].sum() > 0.85 * 8  # pushed to the bounds


@pytest.mark.parametrize("kind", [CEM, MPPI])
def test_seeded_and_warm_start_never_worse(kind):
    goal = torch.tensor([[3.0, 2.0]])

    def run(seed, init=None, iterations=3):
        return make(kind, seed=seed, iterations=iterations).plan(
            lambda a: integrator(torch.zeros(1, 2), a), lambda p: summed_distance(1)(p, goal), init=init)

    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a.actions, b.actions) and not torch.equal(a.actions, c.actions)
    good = run(0, iterations=15)
    warm = run(5, init=good.actions, iterations=1)
    assert float(warm.cost) <= float(good.cost) + 1e-6


@pytest.mark.parametrize("kind", [CEM, MPPI])
def test_workers_split_the_samples_and_plan_the_same(kind):
    """With workers=2 each iteration's samples are evaluated in two halves on pool threads with one torch
    thread each and the caller's grad mode; per-sample costs make the plan the same as in one batch, and
    torch's thread count is restored afterwards, also when the cost raises."""
    goal = torch.tensor([[3.0, -2.0]])
    seen = []

    def rollout(a):
        seen.append((a.shape[0], threading.current_thread() is threading.main_thread(), torch.get_num_threads(),
                     torch.is_grad_enabled()))
        return integrator(torch.zeros(1, 2), a)

    def cost(p):
        return final_distance(1)(p, goal)

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        one = make(kind, iterations=4).plan(rollout, cost)
        seen.clear()
        split = make(kind, iterations=4, workers=2).plan(rollout, cost)
        assert seen == [(64, False, 1, True)] * 8
        seen.clear()
        with torch.no_grad():
            make(kind, iterations=1, workers=2).plan(rollout, cost)
        assert seen == [(64, False, 1, False)] * 2
        assert torch.get_num_threads() == 2
        torch.testing.assert_close(split.actions, one.actions)

        def broken(p):
            raise RuntimeError("cost failed")

        with pytest.raises(RuntimeError, match="cost failed"):
            make(kind, workers=2).plan(rollout, broken)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(ValueError, match="workers"):
        make(kind, workers=0)


def test_mppi_takes_every_parameter_of_the_sampling_planner():
    """MPPI lists its parents' parameters again (for its temperature); one left out (``repeat``) crashed the
    recipe's MPPI with held actions."""
    ours = inspect.signature(MPPI.__init__).parameters
    theirs = inspect.signature(SamplingPlanner.__init__).parameters
    assert all(name in ours and ours[name].default == p.default for name, p in theirs.items())


@pytest.mark.parametrize("kind", [CEM, MPPI])
def test_repeat_holds_actions_and_bad_input(kind):
    planner = make(kind, horizon=9, repeat=4)
    plan = planner.plan(lambda a: integrator(torch.zeros(1, 2), a), lambda p: final_distance(1)(p, torch.tensor([[4.0, 0.0]])))
    assert plan.actions.shape == (9, 2)
    assert torch.equal(plan.actions[0], plan.actions[3]) and torch.equal(plan.actions[4], plan.actions[7])
    assert float(plan.cost) < 0.3  # 4 steps at the bound of 1.0 reach x = 4
    with pytest.raises(ValueError, match="shape"):
        planner.plan(lambda a: integrator(torch.zeros(1, 2), a), lambda p: p[:, -1, 0], init=torch.zeros(4, 3))
    with pytest.raises(ValueError, match="bounds"):
        planner.plan(lambda a: integrator(torch.zeros(1, 2), a), lambda p: p[:, -1, 0], init=torch.full((4, 2), 2.0))
    with pytest.raises(ValueError, match="one value per sample"):
        planner.plan(lambda a: integrator(torch.zeros(1, 2), a), lambda p: p[:, -1])
    with pytest.raises(ValueError, match="low < high"):
        make(kind, low=1.0, high=-1.0)


class CountingModel:
    """An integrator world model that counts its calls."""

    def __init__(self):
        self.encodes, self.rollouts, self.steps = 0, 0, []

    def encode(self, obs):
        self.encodes += 1
        return obs.view(obs.shape[0], -1)

    def rollout(self, start, actions, *, last_only=False):
        self.rollouts += 1
        self.steps.append(actions.shape[1])
        states = integrator(start, actions)
        return states[:, -1:] if last_only else states


@pytest.mark.parametrize("replan_every", [1, 3])
def test_agent_receding_horizon_reaches_goal_encoding_once_per_call(replan_every):
    model = CountingModel()
    planner = make(CEM, horizon=6, iterations=6)
    agent = PlanningAgent(model, planner, final_distance(1), replan_every=replan_every)
    goal = torch.tensor([4.0, -2.5])
    agent.reset(goal)
    state = torch.zeros(2)
    for _ in range(9):
        state = state + agent.act(state)
    assert torch.allclose(state, goal, atol=0.3)
    calls = len(agent.plan_seconds)
    assert calls == -(-9 // replan_every)
    assert model.encodes == 1 + calls  # the goal once, the start once per planning call
    assert model.rollouts == calls * planner.iterations
    with pytest.raises(ValueError, match="replan_every"):
        PlanningAgent(model, planner, final_distance(1), replan_every=7)


def test_agent_counts_down_to_the_episode_end():
    seen = []

    def cost(pred, goal):
        seen.append(pred.shape[1])
        return final_distance(1)(pred, goal)

    agent = PlanningAgent(CountingModel(), make(CEM, horizon=6, iterations=1), cost, replan_every=1, episode_steps=8)
    agent.reset(torch.zeros(2))
    for _ in range(8):
        agent.act(torch.zeros(2))
    assert seen == [6, 6, 6, 5, 4, 3, 2, 1]


def test_final_only_agent_plans_the_same_from_the_last_state_alone():
    """With a final-state cost, imagining only the last state changes nothing but the work: the same seed
    gives the same actions; with an episode end the model is asked for no step past it."""
    actions = {}
    for final_only in (False, True):
        model, seen = CountingModel(), []

        def cost(pred, goal):
            seen.append(pred.shape[1])
            return final_distance(1)(pred, goal)

        agent = PlanningAgent(model, make(CEM, horizon=6, iterations=2), cost, final_only=final_only)
        agent.reset(torch.tensor([4.0, -2.5]))
        actions[final_only] = torch.stack([agent.act(torch.zeros(2)) for _ in range(3)])
        assert set(seen) == ({1} if final_only else {6})
    assert torch.equal(actions[True], actions[False])
    model = CountingModel()
    agent = PlanningAgent(model, make(CEM, horizon=6, iterations=1), final_distance(1), episode_steps=8,
                          final_only=True)
    agent.reset(torch.zeros(2))
    for _ in range(8):
        agent.act(torch.zeros(2))
    assert model.steps == [6, 6, 6, 5, 4, 3, 2, 1]


def test_agent_rejects_a_stuck_planner_that_does_not_look_further():
    with pytest.raises(ValueError, match="must exceed"):
        PlanningAgent(CountingModel(), make(CEM, horizon=6), final_distance(1), further=make(CEM, horizon=6))
    with pytest.raises(ValueError, match="stuck_margin"):
        PlanningAgent(CountingModel(), make(CEM, horizon=6), final_distance(1), further=make(CEM, horizon=9),
                      stuck_margin=1.0)


@pytest.mark.parametrize("check_progress", [False, True])
def test_agent_with_progress_check_looks_further_where_the_plan_did_not_deliver(check_progress):
    """The model imagines free motion towards the goal at x = 5; reality stops the state at a wall at x = 1.
    Every short plan promises to end far below standing still, so only the progress check can notice: the
    first segment gets from 0 to 1 (energy 5 -> 4, kept), the second nowhere (4 -> 4, broken), so at the
    third call the agent plans at the longer horizon and keeps that plan for the 6 steps it spans."""
    model, seen = CountingModel(), []

    def cost(pred, goal):
        seen.append(pred.shape[1])
        return (pred[:, -1, 0] - 5.0).abs()

    short, longer = make(CEM, horizon=3, iterations=1), make(CEM, horizon=6, iterations=1)
    agent = PlanningAgent(model, short, cost, replan_every=3, further=longer, check_progress=check_progress)
    agent.reset(torch.zeros(2))
    state = torch.zeros(2)
    for _ in range(12):
        state = state + agent.act(state)
        state[0] = state[0].clamp(max=1.0)
    assert state[0] == 1.0
    if check_progress:
        assert agent.escalations == 1 and seen == [3, 3, 3, 3, 3, 3, 6, 6]
    else:
        assert agent.escalations == 0 and seen == [3, 3] * 4
    with pytest.raises(ValueError, match="check_progress needs"):
        PlanningAgent(model, short, cost, check_progress=True)


@pytest.mark.parametrize("episode_steps", [30, None])
def test_stuck_agent_plans_at_the_longer_horizon_for_as_long_as_that_plan_spans(episode_steps):
    """An energy that is flat (1) until x > 4 and 0 beyond: with actions bounded by 1, no 3-step plan gets
    there, so every short plan ties with standing still; the agent switches to the 6-step planner, keeps it
    for the 6 steps its plan spans, and is back on the short planner (and not stuck) once past x = 4."""
    model, seen = CountingModel(), []

    def cost(pred, goal):
        seen.append(pred.shape[1])
        return (pred[:, -1, 0] <= 4.0).float()

    short, longer = make(CEM, horizon=3, iterations=1), make(CEM, horizon=6, iterations=3, init_std=3.0)
    agent = PlanningAgent(model, short, cost, replan_every=3, further=longer, episode_steps=episode_steps)
    agent.reset(torch.zeros(2))
    state = torch.zeros(2)
    for _ in range(12):
        state = state + agent.act(state)
    assert agent.escalations == 1 and state[0] > 4  # also without an episode end (the longer plan is not cut)
    # step 0: the short plan (1 iteration), standing still, then the longer plan (3 iterations); step 3:
    # the longer plan alone (still within its 6 steps); steps 6 and 9: the short plan and standing still,
    # not stuck any more
    assert seen == [3, 3, 6, 6, 6, 6, 6, 6, 3, 3, 3, 3]


class WallModel(CountingModel):
    """An integrator with a wall at x = ``wall_x`` for |y| < 4 (a model's belief, or with 1.0 reality)."""

    def __init__(self, wall_x):
        super().__init__()
        self.wall_x = wall_x

    def rollout(self, start, actions, *, last_only=False):
        self.rollouts += 1
        pos, states = start.expand(actions.shape[0], 2), []
        for t in range(actions.shape[1]):
            pos = through_wall(pos, actions[:, t], self.wall_x)
            states.append(pos)
        states = torch.stack(states, dim=1)
        return states[:, -1:] if last_only else states


def through_wall(pos, action, wall_x):
    new = pos + action
    blocked = (new[:, 1].abs() < 4) & (new[:, 0] > wall_x) & (pos[:, 0] <= wall_x + 1e-6)
    return torch.stack([torch.where(blocked, torch.full_like(new[:, 0], wall_x), new[:, 0]), new[:, 1]], dim=1)


def test_stall_penalty_is_the_formula_and_counts_only_stalls():
    """A stall is a call where standing still one step is not stuck_margin below the last call's; every
    plan then pays stall_penalty * relu(E_k - d(end, s_k)) on top of its energy."""
    cost = final_distance(1)
    agent = PlanningAgent(CountingModel(), make(CEM, horizon=3, iterations=1), cost, replan_every=3,
                          stall_penalty=2.0, stuck_margin=0.05)
    goal = torch.tensor([5.0, 0.0])
    agent.reset(goal)
    for state in ([0.0, 0.0], [1.0, 0.0], [1.0, 0.1]):  # energy 2.5 -> 2 (progress), 2 -> 2.05 (a stall)
        agent.queue = []
        agent.act(torch.tensor(state))
    assert len(agent.stalls) == 1
    stall, energy = agent.stalls[0]
    assert torch.equal(stall, torch.tensor([[1.0, 0.1]])) and energy == pytest.approx(4.1 / 2)
    rollout, objective = agent.objective(agent.planner, torch.tensor([[1.0, 0.1]]), 3)
    actions = torch.rand(64, 3, 2) * 2 - 1
    pred = rollout(actions)
    expected = cost(pred, goal.view(1, 2)) + 2.0 * torch.relu(energy - (pred[:, -1] - stall).abs().mean(1))
    assert torch.allclose(objective(pred), expected)
    assert (objective(pred) > cost(pred, goal.view(1, 2))).any()
    with pytest.raises(ValueError, match="stall_penalty"):
        PlanningAgent(CountingModel(), make(CEM, horizon=3), cost, stall_penalty=-1.0)


@pytest.mark.parametrize("stall_penalty", [0.0, 1.0])
def test_stall_penalty_leads_around_a_wall_the_model_misplaces(stall_penalty):
    """Goal (3, 0) behind a wall at x = 1 (|y| < 4) that the model places at x = 1.3: pressing into it
    looks better than standing still, and going around its end takes more than the 5-step horizon, so
    without the penalty the agent presses forever. Remembering the stalls makes pressing dearer at every
    call until walking along the wall wins, and from near its end the way around is within the horizon."""
    agent = PlanningAgent(WallModel(1.3), make(CEM, horizon=5, samples=256, iterations=4, init_std=2.0),
                          final_distance(1), replan_every=2, stall_penalty=stall_penalty)
    goal = torch.tensor([3.0, 0.0])
    agent.reset(goal)
    state = torch.zeros(1, 2)
    for _ in range(60):
        state = through_wall(state, agent.act(state[0]).view(1, 2), 1.0)
    if stall_penalty:
        assert agent.stalls and (state[0] - goal).abs().max() < 0.5
    else:
        assert state[0, 0] == 1.0 and not agent.stalls
