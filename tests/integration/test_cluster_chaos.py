"""The three-broker chaos scenarios, short, as `make test-cluster` runs them (not `make test`: they fail
today): a broker fault loses and doubles nothing, really happens, restarts no member, and stays within
issue 20's rules for the answers.

The test starts a three-broker cluster of its own (CLUSTER_TEST_PORT, 19100 by
default: nodes on 19100, 19102, 19104, controllers one above; data in
.cache/kafka-cluster-test) and stops it at the end; under CI=true a cluster
that cannot start fails the test instead of skipping it. All four scenarios
run once, against one pipeline, in the module's fixture (the same code as
`pipeline chaos cluster --short`); each test then judges one scenario's row:

* ``test_..._the_fault_happened``: 0 lost, 0 duplicated, the fault verified
  (the killed broker's process gone, leadership or the controller moved, the
  paused process stopped), no member restarted;
* ``test_..._rules``: <= 0.1 % of the answers not ok and p99 <= 3 s over the
  requests sent while the fault acted (docs/reliability.md, "Three brokers").
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from pipeline.errors import PipelineError
from pipeline.local import broker
from pipeline.settings import PROJECT_ROOT, Settings
from pipeline.tools.chaos.brokers import ChaosCluster, cluster_settings
from pipeline.tools.chaos.cluster_faults import CLUSTER_ORDER, RESTART_PROBLEM, ClusterOptions, run_cluster
from pipeline.tools.chaos.tally import Row, render

# Five broker restarts (a JVM start each: 40-65 s at load 20-30 on the shared 2-core machine) and
# one pipeline start: about 10 minutes there, past the suite's 600 s default.
pytestmark = [pytest.mark.integration, pytest.mark.cluster, pytest.mark.timeout(1800)]

PORT = int(os.environ.get("CLUSTER_TEST_PORT", "19100"))
# A subset while working on one (comma-separated names); the others are then skipped. Default: all.
ONLY = tuple(n for n in os.environ.get("CLUSTER_TEST_SCENARIOS", ",".join(CLUSTER_ORDER)).split(",") if n)
SHORT = ClusterOptions(short=True, rate=5.0)  # below what the busy 2-core machine answers, so a fault shows

NOT_OK_SHARE = 0.001  # issue 20 point 2: <= 0.1 % not ok
EVENT_P99_MS = 3000.0  # and p99 <= 3 s during the event


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def rows(kafka: Settings) -> Iterator[dict[str, Row]]:
    settings = cluster_settings(kafka, port=PORT, kafka_dir=PROJECT_ROOT / ".cache" / "kafka-cluster-test")
    try:
        if broker.kafka_version(broker.paths(settings)) is None:
            raise PipelineError("no Kafka jars: run `make setup`")
        cluster = ChaosCluster(settings, say=print).__enter__()
    except PipelineError as exc:
        message = f"no three-broker cluster at {broker.address(settings)}: {exc}"
        if _in_ci():
            pytest.fail(f"CI=true and {message}", pytrace=False)
        pytest.skip(message)
    try:
        unknown = set(ONLY) - set(CLUSTER_ORDER)
        assert not unknown, f"CLUSTER_TEST_SCENARIOS names {sorted(unknown)}; known: {CLUSTER_ORDER}"
        found = run_cluster(cluster, ONLY, SHORT, print)
        print(render(found))
        yield {row.scenario: row for row in found}
    finally:
        cluster.__exit__()


def _row(rows: dict[str, Row], scenario: str) -> Row:
    if scenario not in rows:
        pytest.skip(f"CLUSTER_TEST_SCENARIOS={','.join(ONLY)} leaves {scenario} out")
    return rows[scenario]


@pytest.mark.parametrize("scenario", CLUSTER_ORDER)
def test_a_broker_fault_loses_and_doubles_nothing_and_the_fault_happened(rows: dict[str, Row], scenario: str) -> None:
    row = _row(rows, scenario)
    assert row.sent >= 100, render([row])
    broken = [
        *(p for p in row.problems if not p.endswith(RESTART_PROBLEM)),  # the fault not verified; could not run
        *([f"{row.lost} lost"] if row.lost else []),
        *([f"{row.duplicated} duplicated"] if row.duplicated else []),
    ]
    assert broken == [], "\n".join(broken) + "\n" + render([row])


@pytest.mark.parametrize("scenario", CLUSTER_ORDER)
def test_a_broker_fault_restarts_no_member(rows: dict[str, Row], scenario: str) -> None:
    row = _row(rows, scenario)
    assert row.restarts == 0, f"{row.restarts} member restarts (see the member logs)\n" + render([row])


# Measured 2026-12-05 08:55-09:00 UTC (commit f8f5fd0, 5 requests/s, load 7-9 on the shared 2-core
# machine; docs/reliability.md "Three brokers"): the rules are not met here, so this is an expected
# failure; strict, so a run that meets them fails it and the mark must go.
THRESHOLDS_MISSED = (
    "measured 2026-12-05 13:50 UTC on a quiet machine: leader-kill 166 sent, all ok, event p99 8.7 s; "
    "rolling-restart 319 sent, deadline_exceeded 11 (3.4 %), event p99 17.0 s; "
    "controller-kill 168 sent, all ok, event p99 7.5 s; "
    "pause-broker 106 sent, deadline_exceeded 6 (5.7 %), event p99 14.0 s; "
    "the not-ok share is met in two scenarios, event p99 <= 3 s in none"
)


@pytest.mark.xfail(strict=True, reason=THRESHOLDS_MISSED)
@pytest.mark.parametrize("scenario", CLUSTER_ORDER)
def test_a_broker_fault_keeps_the_answers_within_the_rules(rows: dict[str, Row], scenario: str) -> None:
    row = _row(rows, scenario)
    share = row.not_ok / max(1, row.sent)
    p99 = row.event_p99_ms
    broken = [
        rule
        for rule, holds in (
            (f"<= {NOT_OK_SHARE:.1%} not ok, got {share:.2%} ({dict(row.answers)})", share <= NOT_OK_SHARE),
            (f"event p99 <= {EVENT_P99_MS:.0f} ms, got {p99} ms", p99 is not None and p99 <= EVENT_P99_MS),
        )
        if not holds
    ]
    assert broken == [], "\n".join(broken) + "\n" + render([row])
