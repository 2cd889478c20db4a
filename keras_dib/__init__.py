"""keras_dib: greedy layer-wise training with a deterministic information
bottleneck (matrix-based Renyi entropy), for Keras 3 on every backend."""

from keras_dib import analysis
from keras_dib import callbacks
from keras_dib import datasets
from keras_dib import losses
from keras_dib import models
from keras_dib import ops
from keras_dib import recipes
from keras_dib.export import export_for_serving
from keras_dib.losses import DIB
from keras_dib.losses import HSICBottleneck
from keras_dib.losses import LocalObjective
from keras_dib.models import AuxiliaryHead
from keras_dib.models import GreedyLayerwiseModel
from keras_dib.models import build_resnet
from keras_dib.models import build_vgg
from keras_dib.models import split_model
from keras_dib.models.fitting import BlockCallback
from keras_dib.version import __version__

__all__ = [
    "DIB",
    "AuxiliaryHead",
    "BlockCallback",
    "GreedyLayerwiseModel",
    "HSICBottleneck",
    "LocalObjective",
    "__version__",
    "analysis",
    "build_resnet",
    "build_vgg",
    "callbacks",
    "datasets",
    "export_for_serving",
    "losses",
    "models",
    "ops",
    "recipes",
    "split_model",
]
