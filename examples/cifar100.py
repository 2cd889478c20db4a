"""Greedy layer-wise training of a VGG-11 on CIFAR-100, with a DIB objective.

CIFAR-100 has the same 32x32 images as CIFAR-10 (50000 training, 10000
test) in 100 fine classes. With ten times more classes and ten times fewer
images a class, the auxiliary problem of each greedy block is much richer,
which is the regime where local learning is known to come closest to end to
end training (Nokland & Eidnes 2019).

The official archive is not shipped with this repository: pass
`--data_dir` (a folder or archive holding
`cifar-100-python.tar.gz`, its extracted `cifar-100-python/` folder, or a
class-per-folder tree). Without it the loader looks in `$KERAS_DIB_DATA` and
the Keras cache, tries to download, and otherwise raises an error that says
where it looked.

Modes (`--mode`): `greedy_dib` (default: one block at a time, each on
`CE + beta * I_alpha(X; T_l)`), `greedy_ce` (auxiliary cross-entropy only),
`end_to_end` (backpropagation) and `simultaneous_dib` (all blocks at once,
gradient stopped between them). `--architecture resnet --depth 18` trains
a CIFAR-style ResNet-18 instead of the VGG.

Run from the repository root:

```
python examples/cifar100.py --data_dir /path/to/cifar-100-python.tar.gz --quick
python examples/cifar100.py --data_dir /path/to/cifar-100-python --augment
```

The model (`cifar100_<backend>_<mode>.keras`) and a JSON summary
(`cifar100_<backend>_<mode>.json`) are written to `--output_dir` (default
`runs/cifar100`).

References:
    - Krizhevsky, "Learning Multiple Layers of Features from Tiny Images",
      2009.
    - Nokland & Eidnes, "Training Neural Networks with Local Error Signals",
      ICML 2019. https://arxiv.org/abs/1901.06656
    - Yu, Yu & Principe, "Deep Deterministic Information Bottleneck with
      Matrix-based Entropy Functional", ICASSP 2021.
      https://arxiv.org/abs/2102.00533
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
common.define_flags("cifar100")
# `--help` lists the flags defined in `common` too.
flags.adopt_module_key_flags(common)


def main(argv):
    del argv
    # Load (fine labels, 100 classes), standardise, build VGG-11, compile,
    # fit greedily or end to end, evaluate, save: see `common.run`.
    common.main("cifar100", flags.FLAGS)


if __name__ == "__main__":
    common.start(main)
