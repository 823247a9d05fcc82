"""What a developer runs to build, measure or break the pipeline: bench, chaos, quality.

:mod:`.bench` with its load generators, :mod:`.chaos`, and :mod:`.quality`
(evaluation, calibration, the int8 encoder's check). Nothing in the serving
path imports from here.
"""
