"""dlkit.layers.recurrent (being written)."""

__all__: list[str] = []
