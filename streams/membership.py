"""Stopping without leaving the consumer group, for brokers where leaving can wedge it.

Tansu 0.6.0 (the embedded broker) keeps a member that leaves a group while it leads a
rebalance as that group's leader: every member that joins afterwards is a follower waiting for
a leader that will never sync, and no partition is assigned again (tansu-broker
`coordinator/group/administrator.rs`: a forming group's `leave` removes the member but not the
leader; `tests/test_membership.py` shows it). A member that stops without a LeaveGroup is
expired after its session timeout instead, leader included, and the group forms again: its
partitions move that much later, which is the price on a broker like that. On Kafka, leaving
is right: the group moves the partitions at once.
"""

from __future__ import annotations

from typing import Any


def keep_membership_on_stop(consumer: Any) -> None:
    """Make a started aiokafka consumer forget its generation without a LeaveGroup wherever
    it would have left (stopping, unsubscribing, idle past `max_poll_interval_ms`)."""
    coordinator = consumer._coordinator
    if coordinator is None:
        raise RuntimeError("the consumer has no group coordinator: start it with a group id")

    async def forget_without_leaving() -> None:
        coordinator.reset_generation()

    coordinator._maybe_leave_group = forget_without_leaving
