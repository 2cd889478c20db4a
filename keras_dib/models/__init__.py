"""Greedy layer-wise models, network builders and auxiliary heads."""

from keras_dib.models.greedy import GreedyLayerwiseModel
from keras_dib.models.heads import AuxiliaryHead
from keras_dib.models.vgg import build_vgg

__all__ = ["AuxiliaryHead", "GreedyLayerwiseModel", "build_vgg"]
