"""dlkit.layers.positional (being written)."""

__all__: list[str] = []
