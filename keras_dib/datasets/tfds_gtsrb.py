"""GTSRB as a TensorFlow Datasets builder: `tfds.load("gtsrb", ...)`.

The TFDS catalogue has no GTSRB. Importing this module registers the
builder `GTSRB` under the name "gtsrb"; `import keras_dib` makes that
happen as soon as `tensorflow_datasets` is imported (see `tfds_data`), and
`keras_dib.datasets.from_tfds` registers it too.

The archives are never downloaded by TFDS: they are read from the manual
folder with the library's own GTSRB reader (`load_gtsrb`), so every layout
it reads works (the three official zips, the 32x32 copy split into
`GTSRB32_*.zip`, or an extracted `GTSRB/` tree), with the same
completeness checks.

Example:

```python
import keras_dib
import tensorflow_datasets as tfds

train = tfds.load(
    "gtsrb",
    split="train",
    as_supervised=True,
    download_and_prepare_kwargs={
        "download_config": tfds.download.DownloadConfig(
            manual_dir="data/gtsrb"
        )
    },
)
```
"""

import os

import numpy as np
import tensorflow_datasets as tfds

from keras_dib.datasets import gtsrb_data

_EXPECTED_FILES = (
    "the three official zips GTSRB_Final_Training_Images.zip, "
    "GTSRB_Final_Test_Images.zip and GTSRB_Final_Test_GT.zip "
    "(https://benchmark.ini.rub.de/gtsrb_dataset.html); or the 32x32 copy "
    "GTSRB32_Final_Training_Images_part1.zip, _part2.zip, _part3.zip and "
    "GTSRB32_Final_Test.zip; or an extracted GTSRB/ tree "
    "(GTSRB/Final_Training/Images/NNNNN/*.ppm with GT-NNNNN.csv, "
    "GTSRB/Final_Test/Images/*.ppm and GT-final_test.csv)"
)


class GTSRB(tfds.core.GeneratorBasedBuilder):
    """German Traffic Sign Recognition Benchmark, 32x32 RGB, 43 classes.

    Splits "train" (39209 images, with the id of the track, the ~30 images
    of one physical sign, in the "track" feature) and "test" (12630
    images; track -1). Images are resized to 32x32 (bilinear, whole image)
    when the archives hold other sizes. Supervised keys: `("image",
    "label")`.

    Args:
        **kwargs: forwarded to `tfds.core.GeneratorBasedBuilder`
            (`data_dir`, ...).

    Example:

    ```python
    builder = tfds.builder("gtsrb", data_dir="/tmp/tfds")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir="data/gtsrb")
    )
    train = builder.as_dataset(split="train", as_supervised=True)
    ```

    References:
        - Stallkamp, Schlipsing, Salmen & Igel, "Man vs. computer:
          Benchmarking machine learning algorithms for traffic sign
          recognition", Neural Networks 32, 2012.
          https://doi.org/10.1016/j.neunet.2012.02.016
    """

    name = "gtsrb"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release (keras_dib)."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Put in the manual folder {_EXPECTED_FILES}. Pass the folder as "
        "`download_config=tfds.download.DownloadConfig(manual_dir=...)`."
    )

    def _info(self):
        return self.dataset_info_from_configs(
            description=(
                "German Traffic Sign Recognition Benchmark: 43 classes of "
                "traffic signs, 32x32 RGB (resized, whole image). The "
                "'track' feature groups the ~30 images of one physical "
                "sign, for track-wise validation splits."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(
                        shape=gtsrb_data.IMAGE_SIZE + (3,)
                    ),
                    "label": tfds.features.ClassLabel(
                        num_classes=gtsrb_data.NUM_CLASSES
                    ),
                    "track": np.int32,
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://benchmark.ini.rub.de/gtsrb_dataset.html",
            citation=(
                "@article{Stallkamp2012,\n"
                "  title={Man vs. computer: Benchmarking machine learning "
                "algorithms for traffic sign recognition},\n"
                "  author={Stallkamp, J. and Schlipsing, M. and Salmen, J. "
                "and Igel, C.},\n"
                "  journal={Neural Networks}, volume={32}, pages={323--332},"
                "\n  year={2012}\n}"
            ),
        )

    def _split_generators(self, dl_manager):
        manual_dir = os.fspath(dl_manager.manual_dir)
        try:
            (x_train, y_train, tracks), (x_test, y_test) = (
                gtsrb_data.load_gtsrb(manual_dir, cache=False)
            )
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f"{e}\nThe GTSRB TFDS builder expects in its manual folder "
                f"{_EXPECTED_FILES}. Received: manual_dir={manual_dir}"
            ) from e
        test_tracks = np.full(len(y_test), -1, np.int32)
        return {
            "train": self._generate_examples(x_train, y_train, tracks),
            "test": self._generate_examples(x_test, y_test, test_tracks),
        }

    def _generate_examples(self, images, labels, tracks):
        for i, (image, label, track) in enumerate(zip(images, labels, tracks)):
            yield i, {"image": image, "label": int(label), "track": int(track)}
