"""The chaos suite's short scenarios, as `make test` runs them: nothing lost, nothing doubled.

They run against a broker of their own (127.0.0.1:9592, data in
.cache/kafka-chaos-test), because broker-restart stops it for real; the
shared test broker is only needed by the tier's fixtures. Each scenario is
the same code `pipeline chaos SCENARIO --short` runs, measured from outside:
a client that only speaks Kafka, processes killed with real signals.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pipeline.settings import PROJECT_ROOT, Settings
from pipeline.tools.chaos.cluster import ChaosBroker, chaos_settings
from pipeline.tools.chaos.scenarios import Options, broker_restart, fuzz, kill_each
from pipeline.tools.chaos.sigterm import sigterm
from pipeline.tools.chaos.tally import render

pytestmark = pytest.mark.integration

SHORT = Options(short=True, rate=10.0)


@pytest.fixture(scope="module")
def chaos_broker(kafka: Settings) -> Iterator[ChaosBroker]:
    settings = chaos_settings(
        kafka, port=9592, controller_port=9593, kafka_dir=PROJECT_ROOT / ".cache" / "kafka-chaos-test"
    )
    with ChaosBroker(settings, say=print) as broker:
        yield broker


def test_killing_each_stage_loses_and_doubles_nothing(chaos_broker: ChaosBroker) -> None:
    row = kill_each(chaos_broker, SHORT, print)
    print(render([row]))
    assert row.sent >= 300
    assert (row.lost, row.duplicated) == (0, 0), render([row])
    assert row.recovery_s is not None, render([row])


def test_a_broker_restart_loses_and_doubles_nothing(chaos_broker: ChaosBroker) -> None:
    row = broker_restart(chaos_broker, SHORT, print)
    print(render([row]))
    assert row.sent >= 250
    assert (row.lost, row.duplicated) == (0, 0), render([row])
    assert row.recovery_s is not None, render([row])


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
