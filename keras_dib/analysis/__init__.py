"""Information-theoretic analysis of trained networks, layer by layer.

Estimators (matrix-based Renyi information plane, layer-by-layer mutual
information matrix, normalised HSIC plane) for any single-input Keras model
with named layers, or the blocks of a `keras_dib.GreedyLayerwiseModel`; a
callback that records them while training; and plots (matplotlib, optional,
imported lazily).
"""

from keras_dib.analysis.callback import InformationPlaneCallback
from keras_dib.analysis.callback import convergence_epochs
from keras_dib.analysis.callback import load_records
from keras_dib.analysis.gradients import GradientStatistics
from keras_dib.analysis.gradients import gradient_norm_profile
from keras_dib.analysis.gradients import load_gradient_statistics
from keras_dib.analysis.gradients import plot_gradient_norms
from keras_dib.analysis.information import hsic_plane
from keras_dib.analysis.information import information_plane
from keras_dib.analysis.information import information_summary
from keras_dib.analysis.information import mutual_information_matrix
from keras_dib.analysis.plots import plot_information_curves
from keras_dib.analysis.plots import plot_information_plane
from keras_dib.analysis.plots import plot_mutual_information_matrix

__all__ = [
    "GradientStatistics",
    "InformationPlaneCallback",
    "convergence_epochs",
    "gradient_norm_profile",
    "hsic_plane",
    "information_plane",
    "information_summary",
    "load_gradient_statistics",
    "load_records",
    "mutual_information_matrix",
    "plot_gradient_norms",
    "plot_information_curves",
    "plot_information_plane",
    "plot_mutual_information_matrix",
]
