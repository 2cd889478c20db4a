"""keras_dib: greedy layer-wise training with a deterministic information
bottleneck (matrix-based Renyi entropy), for Keras 3 on every backend."""

from keras_dib import losses
from keras_dib import models
from keras_dib import ops
from keras_dib.losses import DIB
from keras_dib.losses import LocalObjective
from keras_dib.models import AuxiliaryHead
from keras_dib.models import GreedyLayerwiseModel
from keras_dib.models import build_vgg
from keras_dib.version import __version__

__all__ = [
    "DIB",
    "AuxiliaryHead",
    "GreedyLayerwiseModel",
    "LocalObjective",
    "__version__",
    "build_vgg",
    "losses",
    "models",
    "ops",
]
