"""dlkit.layers.activations (being written)."""

__all__: list[str] = []
