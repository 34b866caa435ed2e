"""Architecture families and the registry that names them.

Importing this package imports every family module, which registers its builders.
"""

from dlkit.models.registry import create_model, is_model, list_models, register_model

__all__ = ["create_model", "is_model", "list_models", "register_model"]
