"""The chaos suite: break the pipeline from outside and count what comes back.

``pipeline chaos SCENARIO`` starts its own broker (never the shared one), the
stages as real processes, a load generator that speaks only Kafka
(:mod:`pipeline.tools.bench.loadgen`), and then kills, stops, overloads or feeds
bad bytes to them. Every scenario ends in one row of the same table (see
:mod:`pipeline.tools.chaos.tally`); docs/reliability.md keeps the measured table.
"""
