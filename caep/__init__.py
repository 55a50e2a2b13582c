"""caep-engine core: event models, SET codec, scoring and policy. Pure logic, no I/O."""
