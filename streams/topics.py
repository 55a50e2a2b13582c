"""The engine's topics, and creating them on any Kafka-protocol cluster."""

from __future__ import annotations

import contextlib

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from caep.settings import Settings


def engine_topics(settings: Settings) -> list[str]:
    return [
        settings.topic_security_events,
        settings.topic_session_activity,
        settings.topic_engine_input,
        settings.topic_device_index,
        settings.topic_decisions,
        settings.topic_flags,
        settings.topic_dead_letter,
    ]


def compacted_topics(settings: Settings) -> set[str]:
    """Topics holding the latest value per key."""
    return {settings.topic_flags}


async def ensure_topics(
    bootstrap: str, names: list[str], partitions: int, replication: int = 1,
    compacted: set[str] | None = None, *, request_timeout_ms: int = 40000,
) -> None:
    """Create the topics that do not exist yet; existing ones are left as they are."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="caep-admin",
                                request_timeout_ms=request_timeout_ms)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [name for name in names if name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [NewTopic(name, num_partitions=partitions, replication_factor=replication,
                              topic_configs={"cleanup.policy": "compact"}
                              if name in (compacted or set()) else None)
                     for name in missing]
                )
    finally:
        with contextlib.suppress(KafkaError, OSError):  # never hide why it failed
            await admin.close()
