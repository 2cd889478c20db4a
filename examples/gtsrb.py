"""Greedy layer-wise training of a VGG-11 on GTSRB, with a DIB objective.

GTSRB (the German Traffic Sign Recognition Benchmark, here rescaled to 32x32
pixels) has 39209 training and 12630 test images of 43 classes of traffic
signs. This tutorial trains a VGG-11 with batch normalization on it in one
of four ways (`--mode`):

- `greedy_dib` (default): one block at a time. Block 1 is trained with a
  small auxiliary classifier on top of it, on the deterministic information
  bottleneck objective `CE + beta * I_alpha(X; T_1)` (`keras_dib.DIB`); it
  is then frozen, and block 2 is trained on its output, and so on. The last
  block is trained through the network's real classifier.
- `greedy_ce`: the same, with the cross-entropy of the auxiliary heads only
  (`keras_dib.LocalObjective()`), the classic greedy baseline.
- `end_to_end`: ordinary backpropagation through the whole network.
- `simultaneous_dib`: every block at once, each on its own DIB objective
  through its own head, the gradient stopped between blocks (decoupled
  greedy learning); `--epochs` epochs of the whole network.

`--architecture resnet --depth 18` trains a CIFAR-style ResNet-18 instead
(one greedy block per residual block).

Run from the repository root:

```
python examples/gtsrb.py --quick        # smoke run: ~1 min on CPU, ~28%
python examples/gtsrb.py --width 16 --epochs_per_block 2
python examples/gtsrb.py --mode end_to_end --epochs 30
python examples/gtsrb.py --architecture resnet --depth 18 --width 16
# Auxiliary heads with a 3x3 convolution (Belilovsky et al.), 5000
# training images (whole tracks) held out to choose the recipe on:
python examples/gtsrb.py --width 16 --epochs_per_block 2 \
    --head_conv_filters 32 --validation_size 5000
```

For the greedy modes without augmentation, the frozen blocks' output is
computed once per block (`fit(cache_prefix=True)`; `--nocache_prefix` turns
it off), which makes the greedy epochs much cheaper.

The data is read from `--data_dir`, else from `$KERAS_DIB_DATA/gtsrb`
when that variable is set (the official archives, for offline machines),
else from the Keras cache (downloaded once). The trained model
(`gtsrb_<backend>_<mode>.keras`) and a JSON summary
(`gtsrb_<backend>_<mode>.json`: test accuracy, per-block training
history, wall time, settings, backend and device) are written to
`--output_dir` (default `runs/gtsrb`).

References:
    - Stallkamp, Schlipsing, Salmen & Igel, "Man vs. computer: Benchmarking
      machine learning algorithms for traffic sign recognition", Neural
      Networks 2012.
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

# Every flag (architecture, greedy schedule, DIB parameters, optimizer,
# `--quick`, ...) is defined once in `examples/common.py`.
common.define_flags("gtsrb")
# `--help` lists the flags defined in `common` too.
flags.adopt_module_key_flags(common)


def main(argv):
    del argv
    # `common.main` does the whole job: it loads the arrays, builds the
    # standardised input pipelines (no horizontal flips for traffic signs),
    # builds `keras_dib.build_vgg(11, num_classes=43)`, compiles it with SGD
    # (momentum 0.9, weight decay, cosine decay restarting per block),
    # fits it (`model.fit(train, epochs=epochs_per_block)` for the greedy
    # modes, `schedule="end_to_end"` otherwise), evaluates it on the test
    # set and saves the model and the summary.
    common.main("gtsrb", flags.FLAGS)


if __name__ == "__main__":
    common.start(main)
