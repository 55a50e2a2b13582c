"""Shared Signals Framework logic for the HTTP edge: wire models, bearer authorization, stream
configuration and matching, decision-to-SET mapping, and poll-queue semantics. No I/O here;
the servers and Kafka plumbing live in `streams/edge*.py`."""
