"""The chaos suite's short scenarios, as `make test` runs them: nothing lost, nothing doubled,
and docs/reliability.md's rules for what the answers say.

They run against a broker of their own (127.0.0.1:9592, data in
.cache/kafka-chaos-test; CHAOS_TEST_PORT moves it and its controller
to the port and the next one), because broker-restart stops it for real; the
shared test broker is only needed by the tier's fixtures. Each scenario is
the same code `pipeline chaos SCENARIO --short` runs, measured from outside:
a client that only speaks Kafka, processes killed with real signals.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from pipeline.flow import STAGE_NAMES
from pipeline.settings import PROJECT_ROOT, Settings
from pipeline.tools.chaos.cluster import ChaosBroker, chaos_settings
from pipeline.tools.chaos.scenarios import Options, broker_restart, fuzz, kill_each
from pipeline.tools.chaos.sigterm import sigterm
from pipeline.tools.chaos.tally import Row, render

pytestmark = pytest.mark.integration

SHORT = Options(short=True, rate=10.0)
PORT = int(os.environ.get("CHAOS_TEST_PORT", "9592"))

# docs/reliability.md, kill-each: "<= 0.5 % not ok", asserted as it stands.
NOT_OK_SHARE = 0.005
# Its "recovery <= 3 s + latency" is not met on a busy machine (split's and infer's restart measured
# 3.9-16 s at load 10-17, 1.7-3.5 s at load 1-3; docs/reliability.md): make test asserts a bound that a
# stage coming back slowly or not at all still breaks, and the full scenario's table shows the rule.
RECOVERY_LIMIT_S = 10.0


def not_ok_share(row: Row) -> float:
    return row.not_ok / max(1, row.sent)


@pytest.fixture(scope="module")
def chaos_broker(kafka: Settings) -> Iterator[ChaosBroker]:
    settings = chaos_settings(
        kafka, port=PORT, controller_port=PORT + 1, kafka_dir=PROJECT_ROOT / ".cache" / "kafka-chaos-test"
    )
    with ChaosBroker(settings, say=print) as broker:
        yield broker


def test_killing_each_stage_loses_and_doubles_nothing(chaos_broker: ChaosBroker) -> None:
    row = kill_each(chaos_broker, SHORT, print)
    print(render([row]))
    assert row.sent >= 300
    assert (row.lost, row.duplicated) == (0, 0), render([row])
    assert row.recovery_s is not None, render([row])
    broken = [
        rule
        for rule, holds in (
            (f"one restart per SIGKILL ({len(STAGE_NAMES)}), got {row.restarts}", row.restarts == len(STAGE_NAMES)),
            (f"<= {NOT_OK_SHARE:.1%} not ok, got {not_ok_share(row):.1%}", not_ok_share(row) <= NOT_OK_SHARE),
            (f"recovery <= {RECOVERY_LIMIT_S:.0f} s, got {row.recovery_s:.1f} s", row.recovery_s <= RECOVERY_LIMIT_S),
        )
        if not holds
    ]
    assert broken == [], "\n".join(broken) + "\n" + render([row])


def test_a_broker_restart_loses_and_doubles_nothing(chaos_broker: ChaosBroker) -> None:
    row = broker_restart(chaos_broker, SHORT, print)
    print(render([row]))
    assert row.sent >= 250
    assert (row.lost, row.duplicated) == (0, 0), render([row])
    assert row.recovery_s is not None, render([row])
    # The outage happened: ChaosBroker.stop saw the process gone and the port closed, and no answer
    # arrived while the broker was down (outage_check puts one that did in row.problems). A 5 s
    # outage is well inside the 30 s deadline: every answer is ok (docs/reliability.md).
    broken = [*row.problems, *([] if row.answers == {"ok": row.sent} else [f"answers not all ok: {row.answers}"])]
    assert broken == [], "\n".join(broken) + "\n" + render([row])


def test_bad_input_is_answered_once_dead_lettered_and_never_restarts_a_member(chaos_broker: ChaosBroker) -> None:
    row = fuzz(chaos_broker, SHORT, print)
    print(render([row]))
    assert row.sent >= 1000
    assert row.problems == [], render([row])
    assert (row.lost, row.duplicated, row.restarts) == (0, 0, 0), render([row])


def test_sigterm_ends_every_member_within_10_s_with_the_broker_up_or_down_and_loses_nothing(
    chaos_broker: ChaosBroker,
) -> None:
    row = sigterm(chaos_broker, SHORT, print)
    print(render([row]))
    assert row.sent >= 200
    assert row.problems == [], render([row])
    assert (row.lost, row.duplicated) == (0, 0), render([row])
