"""Greedy layer-wise training of a VGG-11 on CIFAR-10, with a DIB objective.

CIFAR-10 has 50000 training and 10000 test colour images of 32x32 pixels in
10 classes. It is read from `--data_dir` (the official archive, or a
class-per-folder JPEG copy `CIFAR-10-images/{train,test}/<class>/*.jpg`),
else `$KERAS_DIB_DATA/cifar10`, else the Keras cache (downloaded once). A
JPEG copy is slightly lossy, so its accuracies are not exactly comparable
with published CIFAR-10 numbers.

This tutorial trains a VGG-11 with batch normalization in one of four
ways (`--mode`):

- `greedy_dib` (default): one block at a time, each on the deterministic
  information bottleneck objective `CE + beta * I_alpha(X; T_l)` of a small
  auxiliary classifier (`keras_dib.DIB`); earlier blocks stay frozen.
- `greedy_ce`: the same with the auxiliary cross-entropy only.
- `end_to_end`: ordinary backpropagation.
- `simultaneous_dib`: all blocks at once, each on its own DIB objective,
  the gradient stopped between blocks (`--epochs` epochs).

`--architecture resnet --depth 18` trains a CIFAR-style ResNet-18 instead.

CIFAR-10 is where greedy training struggles most (see benchmarks/RESULTS.md):
turn on `--augment` (pad-4 random crops and horizontal flips, done in the
input pipeline so that the train step stays jit-compiled) for a fair
comparison with end-to-end training.

Run from the repository root:

```
python examples/cifar10.py --quick                 # a smoke run (< 1 min, CPU)
python examples/cifar10.py --augment               # the full recipe (GPU)
python examples/cifar10.py --mode end_to_end --augment --epochs 30
```

The model (`cifar10_<backend>_<mode>.keras`) and a JSON summary
(`cifar10_<backend>_<mode>.json`) are written to `--output_dir` (default
`runs/cifar10`).

References:
    - Krizhevsky, "Learning Multiple Layers of Features from Tiny Images",
      2009.
    - Yu, Yu & Principe, "Deep Deterministic Information Bottleneck with
      Matrix-based Entropy Functional", ICASSP 2021.
      https://arxiv.org/abs/2102.00533
    - Belilovsky, Eickenberg & Oyallon, "Greedy Layerwise Learning Can
      Scale to ImageNet", ICML 2019. https://arxiv.org/abs/1812.11446
"""

import os

# The examples default to JAX; any backend works (set KERAS_BACKEND).
os.environ.setdefault("KERAS_BACKEND", "jax")
# On JAX's CPU backend the eigendecomposition (alpha=1.01) runs in
# OpenBLAS, whose threads fight XLA's for the cores (3-5x slower).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import common  # noqa: E402
from absl import flags  # noqa: E402

# Every flag is defined once in `examples/common.py`.
common.define_flags("cifar10")
# `--help` lists the flags defined in `common` too.
flags.adopt_module_key_flags(common)


def main(argv):
    del argv
    # Load, standardise, build VGG-11 (10 classes), compile, fit greedily or
    # end to end, evaluate on the test set, save: see `common.run`.
    common.main("cifar10", flags.FLAGS)


if __name__ == "__main__":
    common.start(main)
