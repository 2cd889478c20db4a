"""Kernels and matrix-based Renyi entropy functionals (pure `keras.ops`)."""

from keras_dib.ops.hsic import center_gram
from keras_dib.ops.hsic import hsic
from keras_dib.ops.hsic import normalized_hsic
from keras_dib.ops.kernels import gaussian_gram
from keras_dib.ops.kernels import kernel_width
from keras_dib.ops.kernels import label_gram
from keras_dib.ops.kernels import pairwise_squared_distances
from keras_dib.ops.renyi import joint_renyi_entropy
from keras_dib.ops.renyi import normalize_gram
from keras_dib.ops.renyi import renyi_entropy
from keras_dib.ops.renyi import renyi_mutual_information

__all__ = [
    "center_gram",
    "hsic",
    "normalized_hsic",
    "gaussian_gram",
    "joint_renyi_entropy",
    "kernel_width",
    "label_gram",
    "normalize_gram",
    "pairwise_squared_distances",
    "renyi_entropy",
    "renyi_mutual_information",
]
