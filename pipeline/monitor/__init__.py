"""The pipeline-wide monitor: a faust-streaming app over the ``telemetry`` topic (``pipeline monitor``).

Only this package imports faust; ``app`` builds the app, ``state`` (no faust)
holds what it knows and shows, ``page`` is its live web page.
"""
