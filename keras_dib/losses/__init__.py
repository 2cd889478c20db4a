"""Local objectives for greedy layer-wise training (serializable losses)."""

from keras_dib.losses.dib import DIB
from keras_dib.losses.dib import LocalObjective

__all__ = ["DIB", "LocalObjective"]
