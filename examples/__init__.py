"""Examples of relying services built on caep.client."""
