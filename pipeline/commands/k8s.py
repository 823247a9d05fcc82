"""``pipeline k8s``: the Kubernetes manifests of the pipeline, made from the stage map (pipeline.operations.deploy)."""

from __future__ import annotations

import argparse
from typing import Any

import yaml

HEADER = """\
# Made by `pipeline k8s > ops/k8s/pipeline.yaml` from pipeline/flow.py and topics/:
# do not edit by hand (tests/unit/test_k8s.py checks it is up to date).
# Needs: a Kafka cluster at PIPELINE_BOOTSTRAP_SERVERS, KEDA for the ScaledObjects,
# and the image built from the Dockerfile as kafka-inference-pipeline:latest.
"""


def register(sub: Any) -> None:
    k8s = sub.add_parser("k8s", help="print the Kubernetes manifests (StatefulSets, budgets, KEDA scalers)")
    k8s.set_defaults(func=cmd_k8s)


def render() -> str:
    from pipeline.operations.deploy import manifests
    from pipeline.settings import Settings

    docs = manifests(Settings())
    return HEADER + "".join("---\n" + yaml.safe_dump(doc, sort_keys=False) for doc in docs)


def cmd_k8s(args: argparse.Namespace) -> int:
    print(render(), end="")
    return 0
