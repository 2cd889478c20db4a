"""Local objectives for greedy layer-wise training (serializable losses)."""

from keras_dib.losses.dib import DIB
from keras_dib.losses.dib import InformationPreservation
from keras_dib.losses.dib import LocalObjective
from keras_dib.losses.hsic import HSICBottleneck
from keras_dib.losses.relevance import InformationBottleneck
from keras_dib.losses.relevance import RelevanceDIB
from keras_dib.losses.relevance import SimilarityMatching

__all__ = [
    "DIB",
    "HSICBottleneck",
    "InformationBottleneck",
    "InformationPreservation",
    "LocalObjective",
    "RelevanceDIB",
    "SimilarityMatching",
]
