"""Local objectives for greedy layer-wise training (serializable losses)."""

from keras_dib.losses.dib import DIB
from keras_dib.losses.dib import LocalObjective
from keras_dib.losses.hsic import HSICBottleneck

__all__ = ["DIB", "HSICBottleneck", "LocalObjective"]
