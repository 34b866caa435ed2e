"""From-scratch building blocks, drop-in compatible with their ``torch.nn`` namesakes.

Every public name of every layer module is re-exported here, so ``dlkit.layers.LSTM``
can replace ``torch.nn.LSTM`` in user code. The recurrent layers' kernels (the fast
back-end's autograd Function and its per-cell steps) stay in
:mod:`dlkit.layers.recurrent_kernels`; its cell equations (``lstm_step``, ...) are
re-exported through :mod:`dlkit.layers.recurrent`.
"""

from dlkit.layers import init
from dlkit.layers.activations import *  # noqa: F403
from dlkit.layers.attention import *  # noqa: F403
from dlkit.layers.attention_scoring import *  # noqa: F403
from dlkit.layers.dropout import *  # noqa: F403
from dlkit.layers.normalization import *  # noqa: F403
from dlkit.layers.perceptron import *  # noqa: F403
from dlkit.layers.pooling import *  # noqa: F403
from dlkit.layers.positional import *  # noqa: F403
from dlkit.layers.recurrent import *  # noqa: F403
from dlkit.layers.regularizers import *  # noqa: F403
from dlkit.layers.transformer import *  # noqa: F403
from dlkit.layers.inception import *  # noqa: F403
from dlkit.layers.squeeze_excite import *  # noqa: F403
