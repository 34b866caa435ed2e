"""dlkit.layers.init (being written)."""

__all__: list[str] = []
