"""Architecture families and the registry that names them.

Importing this package imports every family module, which registers its builders.
"""

# Family modules register their builders on import.
from dlkit.models import lenet, mlp  # noqa: F401
from dlkit.models.lenet import LeNet5, LeNetConfig
from dlkit.models.mlp import MLP, MLPConfig
from dlkit.models.registry import create_model, is_model, list_models, register_model

__all__ = ["LeNet5", "LeNetConfig", "MLP", "MLPConfig", "create_model", "is_model", "list_models", "register_model"]
