"""Integration fixtures: one real Kafka broker per test session, fresh topics per test.

The broker is the project's own local KRaft broker (``deploy/kafka/local-kafka.sh``) in a pytest
temp dir, so a developer's demo broker is never touched; set ``OUTRIDER_KAFKA_BOOTSTRAP`` to run
against an existing cluster instead.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError

from service.local_broker import EXTERNAL_ENV, LocalBroker

INTEGRATION_DIR = Path(__file__).resolve().parent

TopicFactory = Callable[..., str]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark everything under tests/integration, so `-m "not integration"` skips the broker."""
    for item in items:
        if INTEGRATION_DIR in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.integration)


def _java_available() -> bool:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return True
    return shutil.which("java") is not None


@pytest.fixture(scope="session")
def local_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """The session's broker object; tests that bounce the broker use its ``restart()``."""
    if not os.environ.get(EXTERNAL_ENV) and not _java_available() and not os.environ.get("CI"):
        # A laptop without Java can still run the unit tests; CI must never skip these.
        pytest.skip(f"no Java to run a local Kafka broker (or set {EXTERNAL_ENV})")
    broker = LocalBroker(tmp_path_factory.mktemp("kafka"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(local_broker: LocalBroker) -> str:
    """``host:port`` of the session's broker; unchanged by ``local_broker.restart()``."""
    assert local_broker.bootstrap is not None
    return local_broker.bootstrap


@pytest.fixture
def topic_factory(kafka_bootstrap: str) -> Iterator[TopicFactory]:
    """Create uniquely named topics (``make(partitions=4, prefix="test") -> name``).

    Unique names keep tests independent on a shared session broker (and on an external cluster);
    the topics are deleted again at teardown.
    """
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="outrider-tests")
    created: list[str] = []

    def make(partitions: int = 4, prefix: str = "test") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        created.append(name)
        _wait_for_topic(admin, name)
        return name

    yield make
    try:
        if created:
            admin.delete_topics(created)
    except KafkaError:
        pass  # best effort: the broker may be gone after a failed restart test
    finally:
        admin.close()


def _wait_for_topic(admin: KafkaAdminClient, name: str, timeout_s: float = 30.0) -> None:
    """Wait until every partition has a leader, so the first produce does not race creation."""
    if hasattr(admin, "wait_for_topics"):  # kafka-python >= 3
        admin.wait_for_topics([name], timeout_ms=int(timeout_s * 1000))
        return
    deadline = time.monotonic() + timeout_s
    while name not in admin.list_topics():
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {name} not visible after {timeout_s}s")
        time.sleep(0.1)
