"""Architecture families and the registry that names them.

Importing this package imports every family module, which registers its builders.
"""

# Family modules register their builders on import.
from dlkit.models import alexnet, googlenet, lenet, mlp, resnet, senet, vgg  # noqa: F401
from dlkit.models import efficientnet  # noqa: F401
from dlkit.models import rnn, seq2seq, transformer  # noqa: F401
from dlkit.models.alexnet import AlexNet, AlexNetConfig
from dlkit.models.googlenet import GoogLeNet, GoogLeNetConfig
from dlkit.models.lenet import LeNet5, LeNetConfig
from dlkit.models.mlp import MLP, MLPConfig
from dlkit.models.registry import create_model, is_model, list_models, register_model
from dlkit.models.resnet import ResNet, ResNetConfig
from dlkit.models.rnn import RNNClassifier, RNNClassifierConfig
from dlkit.models.decoding import beam_search, generate, greedy_decode
from dlkit.models.efficientnet import EfficientNetLite, EfficientNetLiteConfig
from dlkit.models.freezing import BN_MODES, Freezable, GroupStatus
from dlkit.models.imagenet import imagenet_class_names
from dlkit.models.encoder_decoder import AttentionDecoder, Decoder, Encoder, EncoderDecoder, VocabConfig
from dlkit.models.seq2seq import RNNSeq2Seq, Seq2SeqConfig
from dlkit.models.senet import SEResNet, SEResNetConfig
from dlkit.models.transformer import TransformerSeq2Seq, TransformerSeq2SeqConfig
from dlkit.models.vgg import VGG, VGGConfig

__all__ = [
    "AlexNet",
    "AlexNetConfig",
    "GoogLeNet",
    "GoogLeNetConfig",
    "LeNet5",
    "LeNetConfig",
    "MLP",
    "MLPConfig",
    "ResNet",
    "ResNetConfig",
    "RNNClassifier",
    "RNNClassifierConfig",
    "Encoder",
    "Decoder",
    "AttentionDecoder",
    "EncoderDecoder",
    "VocabConfig",
    "beam_search",
    "generate",
    "greedy_decode",
    "RNNSeq2Seq",
    "Seq2SeqConfig",
    "TransformerSeq2Seq",
    "TransformerSeq2SeqConfig",
    "SEResNet",
    "SEResNetConfig",
    "VGG",
    "VGGConfig",
    "BN_MODES",
    "EfficientNetLite",
    "EfficientNetLiteConfig",
    "Freezable",
    "GroupStatus",
    "imagenet_class_names",
    "create_model",
    "is_model",
    "list_models",
    "register_model",
]
