"""The autoscaler's decision, driven by a simulated stage: load steps, steady noisy load, caps, downstream backlog."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from pipeline.operations.scaling import Decision, Load, Memory, Policy, decide, learn_rate, parse_limits

CAPACITY = 40.0  # records/s one member handles
START_S = 20.0  # a new member's start and model load: it handles nothing before that
TICK_S = 10.0  # how often the autoscaler reads the groups


@dataclass
class SimulatedStage:
    """A consumer group in numbers: members that take START_S to start, each handling CAPACITY records/s."""

    members: int = 1
    partitions: int = 12
    lag: float = 0.0
    starting: list[float] = field(default_factory=list)  # when each starting member becomes useful

    def run(self, now: float, arrival: float) -> Load:
        """Advance one tick at ``arrival`` records/s; what the autoscaler then reads."""
        self.starting = [t for t in self.starting if t > now]
        useful = self.members - len(self.starting)
        capacity = useful * CAPACITY * TICK_S
        arrived = arrival * TICK_S
        consumed = min(capacity, self.lag + arrived)
        self.lag += arrived - consumed
        age = self.lag / max(consumed / TICK_S, 1.0) if self.lag else 0.0
        return Load(
            "infer",
            useful,
            self.partitions,
            arrival,
            consumed / TICK_S,
            int(self.lag),
            age,
            starting=len(self.starting),
        )

    def resize(self, now: float, members: int) -> None:
        if members > self.members:
            self.starting += [now + START_S] * (members - self.members)
        else:
            self.starting = self.starting[: max(0, len(self.starting) - (self.members - members))]
        self.members = members


def simulate(arrival: Callable[[float], float], seconds: float, policy: Policy | None = None,
             stage: SimulatedStage | None = None) -> tuple[list[Decision], SimulatedStage]:  # fmt: skip
    policy = policy or Policy()
    stage = stage or SimulatedStage()
    memory = Memory()
    decisions: list[Decision] = []
    now = 0.0
    while now < seconds:
        now += TICK_S
        load = stage.run(now, arrival(now))
        decision, memory = decide(load, memory, policy, now)
        decisions.append(decision)
        if decision.changes:
            stage.resize(now, decision.desired)
    return decisions, stage


def changes(decisions: list[Decision]) -> list[tuple[float, int, int]]:
    return [(d.at, d.current, d.desired) for d in decisions if d.changes]


def test_a_load_step_to_three_times_capacity_scales_up_in_steps_then_back_down_slowly() -> None:
    step = (120.0, 420.0)  # 10 req/s, then 3x one member's capacity for 5 minutes, then 10 again

    def arrival(t: float) -> float:
        return 3 * CAPACITY if step[0] <= t < step[1] else 10.0

    decisions, stage = simulate(arrival, 1500.0)
    moves = changes(decisions)
    ups = [m for m in moves if m[2] > m[1]]
    downs = [m for m in moves if m[2] < m[1]]
    assert ups and all(step[0] <= at < step[1] for at, _, _ in ups), moves
    assert max(d.desired for d in decisions) >= 3, "3x capacity needs at least 3 members"
    assert all(new - old <= Policy().max_step_up for _, old, new in ups), "up in steps"
    assert all(b[0] - a[0] >= Policy().up_cooldown_s for a, b in itertools.pairwise(ups)), "cooldown"
    assert downs and all(old - new == 1 for _, old, new in downs), "down one member at a time"
    assert downs[0][0] >= step[1] + Policy().down_after_s, "down only after the need stayed lower"
    assert stage.members == 1 and stage.lag < 50, "back to one member with the backlog gone"
    # While the step lasted, the backlog was drained, not just held.
    peak = max(d.inputs["lag"] for d in decisions)
    assert next(d.inputs["lag"] for d in decisions if d.at == step[1]) < peak / 4
    # Every decision names the inputs it was made from.
    assert {"arrival_rate", "lag", "member_rate", "cap"} <= set(decisions[-1].inputs)
    first = next(d for d in decisions if d.changes)
    assert first.line().startswith("infer: up 1 -> ") and "arrival_rate=120" in first.line()


def test_five_minutes_of_steady_noisy_load_cause_no_flapping() -> None:
    noise = random.Random(9)

    def arrival(t: float) -> float:
        return 100.0 * noise.uniform(0.8, 1.2)  # 2.5 members' worth, +-20 % each reading

    decisions, stage = simulate(arrival, 60.0 + 300.0)
    moves = changes(decisions)
    # It sizes the stage once (in up to two steps) and then holds for the 5 minutes.
    assert moves and all(at <= 90.0 for at, _, _ in moves), moves
    assert stage.members == 3
    assert all(d.action == "hold" for d in decisions if d.at > 90.0)


def test_never_more_members_than_partitions_or_the_stage_maximum() -> None:
    decisions, stage = simulate(lambda t: 1000.0, 600.0, stage=SimulatedStage(partitions=4))
    assert stage.members == 4 and max(d.desired for d in decisions) == 4
    assert any("cap" in d.reason or d.needed == 4 for d in decisions)
    decisions, stage = simulate(lambda t: 1000.0, 600.0, Policy(max_members={"infer": 2}))
    assert stage.members == 2


def test_a_stage_whose_downstream_is_backlogged_does_not_grow() -> None:
    load = Load("split", 1, 12, 200.0, 40.0, 5000, 60.0, downstream="infer", downstream_backlogged=True)
    decision, _ = decide(load, Memory(member_rate=40.0), Policy(), now=1000.0)
    assert decision.action == "hold" and decision.desired == 1 and "downstream infer is backlogged" in decision.reason
    free = Load("split", 1, 12, 200.0, 40.0, 5000, 60.0, downstream="infer")
    assert decide(free, Memory(member_rate=40.0), Policy(), now=1000.0)[0].action == "up"


def test_the_member_rate_is_learnt_from_saturated_readings_only() -> None:
    policy = Policy()
    busy = Load("infer", 2, 12, 100.0, 80.0, 500)
    assert learn_rate(busy, Memory(), policy) == 40.0
    idle = Load("infer", 4, 12, 8.0, 8.0, 0)
    assert learn_rate(idle, Memory(member_rate=40.0), policy) == 40.0, "a quiet stage says nothing of capacity"
    # Nothing learnt and a backlog: one step at a time; nothing learnt and no backlog: hold.
    assert decide(Load("infer", 1, 12, 5.0, 0.0, 300), Memory(), policy, 100.0)[0].desired == 2
    assert decide(Load("infer", 3, 12, 0.0, 0.0, 0), Memory(), policy, 1000.0)[0].desired == 3


def test_limits_parse_and_bad_ones_say_why() -> None:
    assert parse_limits("infer=4, filter=2") == {"infer": 4, "filter": 2}
    assert parse_limits("") == {}
    with pytest.raises(ValueError, match="'infer=x' is not STAGE=N"):
        parse_limits("infer=x")


def test_a_stage_that_keeps_up_is_not_grown_even_when_its_rate_is_only_known_as_a_lower_bound() -> None:
    # Members deliver 16/s because 16/s arrive; 17/s arriving next reading is no reason for a second member.
    memory = Memory(member_rate=16.0)
    decision, _ = decide(Load("split", 1, 12, 17.4, 16.2, 12, 1.5), memory, Policy(), now=500.0)
    assert decision.action == "hold" and decision.desired == 1


def test_fresh_lag_at_a_high_rate_is_flow_not_a_backlog() -> None:
    # Seen live: filter at 400/s with 77 records waiting 0.3 s must not grow.
    memory = Memory(member_rate=400.0)
    decision, _ = decide(Load("filter", 1, 12, 403.3, 396.9, 77, 0.3), memory, Policy(), now=500.0)
    assert decision.action == "hold" and decision.inputs["backlog"] is False


def test_a_stage_at_its_cap_says_so() -> None:
    load = Load("infer", 3, 12, 560.0, 55.0, 56_000, 90.0)
    decision, _ = decide(load, Memory(member_rate=20.0), Policy(max_members={"infer": 3}), now=500.0)
    assert decision.action == "hold" and decision.reason.startswith("at its cap of 3") and decision.inputs["wanted"] > 3
