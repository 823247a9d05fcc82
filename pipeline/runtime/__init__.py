"""The member: the loop that runs one stage, its delivery, clients, state tables and liveness.

Everything a running member does on every record lives here, and this is the
only serving code that imports ``confluent_kafka``: the runner
(:mod:`.runner`) and its policies, delivery and the processing guarantee
(:mod:`.delivery`), the clients and their configuration (:mod:`.clients`,
:mod:`.config`, :mod:`.auth`), state tables (:mod:`.table`), the follower
(:mod:`.follow`), the queue probe (:mod:`.queue_age`), liveness, metrics and
telemetry out. :func:`.member.run_stage` puts a member together. It imports
the stages, tasks and models below it, never the operations or tools above.
"""
