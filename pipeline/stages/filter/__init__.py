"""filter: validate and normalise requests, answer repeats from the answer cache, shed what would be late.

:mod:`.stage` is the stage; :mod:`.queue_wait` its shedding model (the wait a
request would meet downstream, from a probe the runtime opens).
"""
