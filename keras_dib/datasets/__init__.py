"""Data sets for greedy layer-wise training: CIFAR-10/100 and GTSRB.

Array loaders (`load_*`, NumPy + Pillow only) and input pipelines
(`cifar10`, `cifar100`, `gtsrb`, `make_pipeline`) that return `tf.data`
datasets when TensorFlow is installed, else an equivalent
`keras.utils.PyDataset` giving the same batches for the same seed.
TensorFlow is imported only when a `tf.data` pipeline is built.
"""

from keras_dib.datasets.cifar import cifar10
from keras_dib.datasets.cifar import cifar100
from keras_dib.datasets.cifar import load_cifar10
from keras_dib.datasets.cifar import load_cifar100
from keras_dib.datasets.folder import load_image_folder
from keras_dib.datasets.gtsrb_data import gtsrb
from keras_dib.datasets.gtsrb_data import load_gtsrb
from keras_dib.datasets.pipeline import make_pipeline

__all__ = [
    "cifar10",
    "cifar100",
    "gtsrb",
    "load_cifar10",
    "load_cifar100",
    "load_gtsrb",
    "load_image_folder",
    "make_pipeline",
]
