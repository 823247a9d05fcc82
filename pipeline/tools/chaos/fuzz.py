"""The fuzz scenario: the bad-record corpus, with good requests in between, and its checks.

Promises checked (each broken one is a ``problem`` of the row):

1. every record whose request id can be recovered gets exactly one answer,
   an error one unless the record was odd but valid (``expect="once"``);
2. no answer for a record that carries no recoverable id, or that was written
   behind the stage that answers (parts, results);
3. every rejected record is in ``dead-letters`` with its original key and
   bytes, and the topic it came from in ``pipeline-dlq-source``;
4. records over the topic's size limit are refused by the broker;
5. no member restarts, and every good request in between is answered ``ok``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from pipeline.messages import DEAD_LETTER_PREFIX
from pipeline.tools.bench.loadgen import Arrival, RawRecord, Sender, read_all
from pipeline.tools.chaos.cluster import Pipeline
from pipeline.tools.chaos.corpus import BadRecord, build_corpus
from pipeline.tools.chaos.load import Load, Say
from pipeline.tools.chaos.tally import Row

GOOD_EVERY = 10  # one good request after every this many bad records


def run_fuzz(pipeline: Pipeline, pids: Callable[[], dict[str, int]], seed: int, timeout_ms: int, say: Say) -> Row:
    settings = pipeline.settings
    corpus = build_corpus(settings.kafka.prefix, seed)
    load = Load(settings, "fuzz", timeout_ms, pids)
    bad = Sender(settings)
    for record in corpus:
        bad.send(
            str(record.index),
            record.value,
            key=record.key,
            headers=record.headers,
            topic=record.topic,
            key_is_ident=False,
        )
        if record.index % GOOD_EVERY == 0:
            load.send_one()
            time.sleep(0.02)  # good traffic spread over the corpus, not all at the end
    unsent = bad.flush(60)
    if unsent:
        say(f"fuzz: {unsent} bad records unacknowledged after 60 s")
    load.drain(say)
    owed = {r.answer_id for r in corpus if r.answer_id and str(r.index) in bad.acked}
    load.reader.wait_for(lambda arrivals: not owed - {a.id for a in arrivals}, 30.0)
    time.sleep(2.0)
    arrivals = load.reader.snapshot()
    dead = read_all(settings, "dead-letters")
    restarts = pipeline.restarts()
    row = load.row([], restarts, pipeline.startup_restarts)
    good_not_ok = {code: n for code, n in row.answers.items() if code != "ok"}
    if good_not_ok or row.lost:
        row.problems.append(f"good requests not answered ok: {good_not_ok}, lost {row.lost}")
    row.problems.extend(check(corpus, bad, arrivals, dead, settings.kafka.prefix))
    if restarts:
        row.problems.append(f"{restarts} member restarts while the corpus ran")
    # The row counts the bad records too: sent, answers by code, lost (owed, none came), duplicated.
    answers: dict[str, list[Arrival]] = {}
    for arrival in arrivals:
        answers.setdefault(arrival.id, []).append(arrival)
    row.sent += len(bad.acked)
    row.refused += len(bad.refused)
    for rid in sorted(owed):
        got = answers.get(rid, [])
        if got:
            row.answers[got[0].code or got[0].status] += 1
            row.duplicated += len(got) - 1
        else:
            row.lost += 1
    kinds = Counter(r.expect for r in corpus)
    row.notes.append(
        f"{len(corpus)} bad records ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))}), "
        f"{len(load.sender.acked)} good, {len(dead)} dead letters"
    )
    return row


def check(
    corpus: list[BadRecord], bad: Sender, arrivals: list[Arrival], dead: list[RawRecord], prefix: str
) -> list[str]:
    """Every broken promise, one line each."""
    problems: list[str] = []
    by_id: dict[str, list[Arrival]] = {}
    for arrival in arrivals:
        by_id.setdefault(arrival.id, []).append(arrival)
    letters: Counter[tuple[str, bytes | None, bytes]] = Counter()
    for letter in dead:
        headers = dict(letter.headers)
        source = headers.get(DEAD_LETTER_PREFIX + "source", b"").decode("utf-8", "replace").split("[")[0]
        letters[(source, letter.key, letter.value or b"")] += 1
    owed_ids = set()
    for record in corpus:
        where = f"#{record.index} {record.kind} ({record.topic})"
        acked = str(record.index) in bad.acked
        if record.expect == "refused":
            if acked:
                problems.append(f"{where}: over the size limit but the broker took it")
            continue
        if not acked:
            problems.append(f"{where}: not acknowledged: {bad.refused.get(str(record.index), 'no delivery report')}")
            continue
        got = by_id.get(record.answer_id, []) if record.answer_id else []
        if record.answer_id:
            owed_ids.add(record.answer_id)
            if len(got) != 1:
                problems.append(f"{where}: {len(got)} answers for {record.answer_id[:40]}, expected exactly one")
            elif record.expect == "error" and got[0].status != "error":
                problems.append(f"{where}: answered {got[0].status}, expected an error")
        # Rejections (filter's and split's codes) come with a dead letter; merge's partial does not.
        rejected = any(a.code in ("invalid_request", "too_large", "deadline_exceeded") for a in got)
        if (record.expect in ("error", "dead") or rejected) and not letters[
            (record.topic, record.key, record.value or b"")
        ]:
            problems.append(f"{where}: not in dead-letters with its original key and bytes")
    # Answers nobody was owed: ids of the corpus that should have stayed silent.
    for rid in by_id:
        if rid.startswith(f"{prefix}fz") and rid not in owed_ids:
            problems.append(f"unexpected answer for {rid}")
    return problems
