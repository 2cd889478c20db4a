"""Greedy layer-wise models, network builders and auxiliary heads."""

from keras_dib.models import schedules  # noqa: F401 (a public module)
from keras_dib.models.cutting import split_model
from keras_dib.models.greedy import GreedyLayerwiseModel
from keras_dib.models.heads import AuxiliaryHead
from keras_dib.models.resnet import ResidualBlock
from keras_dib.models.resnet import build_resnet
from keras_dib.models.vgg import build_vgg

__all__ = [
    "AuxiliaryHead",
    "GreedyLayerwiseModel",
    "ResidualBlock",
    "build_resnet",
    "build_vgg",
    "split_model",
]
