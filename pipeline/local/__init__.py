"""The local cluster: the project's own Kafka broker and the process supervisor.

Everything here exists so the pipeline runs on one machine (``pipeline up``,
``pipeline demo``, the tests); in production docker compose or Kubernetes
play these parts, and nothing under ``pipeline/runtime/`` or ``pipeline/stages/``
imports from here.
"""
