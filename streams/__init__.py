"""The faust application and the runtime around it: topics, agents, embedded broker, CLI."""
