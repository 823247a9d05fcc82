"""Fixtures of tests/integration/test_security.py: a secure broker of its own and every stage on it.

Registered in tests/conftest.py (``pytest_plugins``) and built only when a test asks:

* ``secure`` (module): ``pipeline kafka start --secure`` with a folder and
  free ports of its own (the shared broker is never touched); Settings as its
  admin, with a topic prefix of their own.
* ``secure_run`` (module): the five stages, generate included, each member
  logged in as its own stage's principal (``pipeline run STAGE`` with no
  user), on the topics and ACLs that ``pipeline up`` applies. The reply model
  is a tiny random Llama built and exported here while the broker starts
  (``secure_llama``: SmolLM2's tokenizer, 2 layers), so generate loads it in
  moments; its replies are nonsense but real model output, streamed like any
  other. Yields the admin's Settings (with the chat model)
  and the supervisor, whose restart counts the tests read.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from pipeline.flow import STAGE_NAMES
from pipeline.local import broker
from pipeline.local.secure import admin_settings
from pipeline.local.supervisor import Supervisor
from pipeline.models.export import ensure_exported
from pipeline.settings import Settings
from tests.chat_engines import build_tiny_llama
from tests.integration.harness import running_pipeline
from tests.net import free_port

COUNTS = dict.fromkeys(STAGE_NAMES, 1)  # every stage of the map, generate included
# The one exit a test causes on purpose: generate refused a write when its ACL is taken away
# (test_a_member_refused_at_run_time_exits_and_answers_once_allowed_again). Any other exit fails the module.
REVOKED = "generate-0"


def as_user(settings: Settings, role: str) -> Settings:
    """``settings`` as the principal of ``role`` (a stage, client or monitor), password from secrets/."""
    return settings.replace(sasl_username=settings.principal(role))


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A secure broker of this module's own; Settings as its admin, with a prefix of their own."""
    base = Settings.from_env(
        kafka_dir=tmp_path_factory.mktemp("kafka-secure"),
        kafka_port=free_port(),
        kafka_controller_port=free_port(),
        kafka_heap="512m",
        kafka_secure=True,
        prefix=f"sec{uuid.uuid4().hex[:8]}-",
    )
    if broker.kafka_version(broker.paths(base)) is None:
        pytest.fail("no Kafka jars: run `make setup`", pytrace=False)
    base = base.replace(bootstrap_servers=broker.address(base))
    broker.start(base, timeout_s=180)
    try:
        yield admin_settings(base)
    finally:
        broker.stop(base)


@pytest.fixture(scope="module")
def secure_llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Future[Path]]:
    """The tiny Llama, built and exported to ONNX in a thread while the broker starts (asked for before it).

    Exported here into the members' model cache, so generate loads it at once
    instead of exporting it while the other members wait for it.
    """
    folder = tmp_path_factory.mktemp("secure-chat") / "tiny-llama"

    def build() -> Path:
        model = build_tiny_llama(folder)
        ensure_exported(str(model), "decoder", Settings.from_env())
        return model

    with ThreadPoolExecutor(1, thread_name_prefix="secure-llama") as pool:
        yield pool.submit(build)


@pytest.fixture(scope="module")
def secure_run(secure_llama: Future[Path], secure: Settings) -> Iterator[tuple[Settings, Supervisor]]:
    # The tiny model's text as it comes: its nonsense would never pass the grounding check.
    settings = secure.replace(chat_model=str(secure_llama.result(600)), chat_engine="", chat_default_tokens=16,
                              chat_grounded=False, chat_history_tokens=4096)  # fmt: skip
    # sasl_username "": each member connects as its stage's principal (pipeline run STAGE).
    with running_pipeline(settings, COUNTS, kills={REVOKED: 1}, sasl_username="") as supervisor:
        yield settings, supervisor


@pytest.fixture
def pipeline(secure_run: tuple[Settings, Supervisor]) -> Settings:
    """The running secure pipeline's admin Settings."""
    return secure_run[0]
