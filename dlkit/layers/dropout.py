"""dlkit.layers.dropout (being written)."""

__all__: list[str] = []
