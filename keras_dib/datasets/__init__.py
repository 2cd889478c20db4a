"""Data sets for greedy layer-wise training: CIFAR-10/100, GTSRB, TFDS.

Array loaders (`load_*`, NumPy + Pillow only) and input pipelines
(`cifar10`, `cifar100`, `gtsrb`, `from_tfds`, `make_pipeline`) that return
`tf.data` datasets when TensorFlow is installed, else an equivalent
`keras.utils.PyDataset` giving the same batches for the same seed.
TensorFlow is imported only when a `tf.data` pipeline is built, TensorFlow
Datasets only by `from_tfds`; the GTSRB TFDS builder (`tfds_gtsrb`) is
registered as soon as `tensorflow_datasets` is imported.
"""

from keras_dib.datasets.cifar import cifar10
from keras_dib.datasets.cifar import cifar100
from keras_dib.datasets.cifar import load_cifar10
from keras_dib.datasets.cifar import load_cifar100
from keras_dib.datasets.folder import load_image_folder
from keras_dib.datasets.gtsrb_data import gtsrb
from keras_dib.datasets.gtsrb_data import load_gtsrb
from keras_dib.datasets.pipeline import make_pipeline
from keras_dib.datasets.tfds_data import from_tfds
from keras_dib.datasets.tfds_data import register_on_import

register_on_import()
del register_on_import

__all__ = [
    "cifar10",
    "cifar100",
    "from_tfds",
    "gtsrb",
    "load_cifar10",
    "load_cifar100",
    "load_gtsrb",
    "load_image_folder",
    "make_pipeline",
]
