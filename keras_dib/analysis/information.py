"""Layer-wise information quantities of a Keras model on a data sample.

Every quantity is estimated on Gram matrices of fixed-size batches of the
sample and averaged over the batches:

- the matrix-based Renyi entropy `H(T_l)` and mutual informations
  `I(X; T_l)` and `I(T_l; Y)` (the information plane of Deep DIB),
- the layer-by-layer mutual information matrix `I(T_i; T_j)`,
- the normalised HSIC plane `(nHSIC(X; T_l), nHSIC(T_l; Y))` of Sakamoto &
  Sato.

Kernel-width rule: the input `X` and every representation `T_l` get a
Gaussian Gram matrix whose width is computed per analysis batch by the
`sigma` rule (default `"knn"`: the mean distance from each sample to its
`num_neighbors=10` nearest neighbours in the batch, as for training with
`keras_dib.losses.DIB`; `"silverman"` or a fixed number also work). Labels
use the label kernel `K_ij = [y_i == y_j]` (`keras_dib.ops.label_gram`), so
`H(Y)` is the Renyi entropy of the batch's class frequencies and
`I(T; Y) <= H(Y)`. Entropies are in bits; they depend on the batch size
(at most `log2(batch_size)`), so compare numbers measured with the same one.

References:
    - Yu, Yu & Principe, "Deep Deterministic Information Bottleneck with
      Matrix-based Entropy Functional", ICASSP 2021.
      https://arxiv.org/abs/2102.00533
    - Yu, Wickstrom, Jenssen & Principe, "Understanding Convolutional
      Neural Networks with Information Theory: An Initial Exploration",
      IEEE TNNLS 2020. https://arxiv.org/abs/1804.06537
    - Sakamoto & Sato, "End-to-End Training Induces Information Bottleneck
      through Layer-Role Differentiation: A Comparative Analysis with
      Layer-wise Training", TMLR 2024. https://arxiv.org/abs/2402.09050
"""

import weakref

import keras
import numpy as np
from keras import ops

from keras_dib.models.greedy import GreedyLayerwiseModel
from keras_dib.ops import kernels
from keras_dib.ops import renyi

# The submodule's function, not `keras_dib.ops.hsic` (a module that a
# package export of the function `hsic` would shadow).
from keras_dib.ops.hsic import normalized_hsic

# What `information_summary` can compute, by name.
INCLUDE_OPTIONS = ("renyi", "hsic", "matrix")
# Per-layer keys of the results.
RENYI_KEYS = ("I_XT", "I_TY", "H_T")
HSIC_KEYS = ("nHSIC_XT", "nHSIC_TY")

# Feature extractors (functional models over a model's layers), cached per
# model so that their compiled predict functions are reused between calls.
# Weak keys: no reference to the model is kept, and nothing is attached to
# it (a Model attribute would be tracked as a sublayer).
_EXTRACTORS = weakref.WeakKeyDictionary()


# === Arguments ===


def _check_positive_int(name, value, minimum=1):
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < minimum
    ):
        raise ValueError(
            f"`{name}` should be an integer >= {minimum}. "
            f"Received: {name}={value!r}"
        )


def _check_analysis_args(include, alpha, sigma, num_neighbors, batch_size):
    """Checks the arguments shared by the analyses; returns `include`."""
    include = _check_include(include)
    renyi._check_alpha(alpha)
    kernels._check_sigma(sigma)
    kernels._check_num_neighbors(num_neighbors)
    _check_positive_int("batch_size", batch_size, minimum=2)
    return include


def _check_include(include):
    if isinstance(include, str):
        include = (include,)
    if not isinstance(include, (list, tuple)) or not all(
        item in INCLUDE_OPTIONS for item in include
    ):
        raise ValueError(
            f"`include` should be a list of names from {INCLUDE_OPTIONS}. "
            f"Received: include={include!r}"
        )
    return tuple(include)


# === Data ===


def _to_numpy(value):
    if isinstance(value, np.ndarray):
        return value
    if ops.is_tensor(value):
        return ops.convert_to_numpy(value)
    return np.asarray(value)


def _is_dataset(x):
    if isinstance(x, (np.ndarray, list, tuple, dict)) or ops.is_tensor(x):
        return False
    if hasattr(x, "element_spec") or isinstance(x, keras.utils.PyDataset):
        return True
    # A tensor of another framework (for example a tf.Tensor under the JAX
    # backend) has a shape; a data iterator does not.
    return not hasattr(x, "shape") and hasattr(x, "__iter__")


def _iterate_dataset(dataset):
    if isinstance(dataset, keras.utils.PyDataset):
        for index in range(len(dataset)):
            yield dataset[index]
    else:
        yield from dataset


def sample_arrays(x, y=None, num_samples=None):
    """Draws a fixed NumPy sample `(x, y)` from arrays or a dataset.

    Args:
        x: an array (NumPy or backend tensor) of inputs, or a dataset
            yielding `(inputs, labels)` batches (`tf.data.Dataset`,
            `keras.utils.PyDataset` or any re-iterable of tuples), in which
            case `y` must be None.
        y: labels for array inputs (integer class indices or one-hot), or
            None.
        num_samples: optional int, the number of samples to keep (the
            first ones). Required for datasets, whose batches are read until
            it is reached.

    Returns:
        A tuple `(x, y)` of NumPy arrays (`y` None when no labels were
        given).

    Example:

    >>> from keras_dib.analysis.information import sample_arrays
    >>> class Batches(keras.utils.PyDataset):  # or a tf.data.Dataset
    ...     def __len__(self):
    ...         return 3
    ...     def __getitem__(self, index):
    ...         rng = np.random.default_rng(index)
    ...         return rng.normal(size=(32, 4)), rng.integers(0, 3, size=32)
    >>> x, y = sample_arrays(Batches(), num_samples=48)
    >>> x.shape, y.shape
    ((48, 4), (48,))
    """
    if num_samples is not None:
        _check_positive_int("num_samples", num_samples)
    if _is_dataset(x):
        if y is not None:
            raise ValueError(
                "When `x` is a dataset it should yield (inputs, labels) "
                "batches and `y` should be None. Received: y of type "
                f"{type(y).__name__}"
            )
        if num_samples is None:
            raise ValueError(
                "Pass `num_batches` (or `num_samples`) when `x` is a "
                "dataset, so that only a sample of it is read. "
                f"Received: x of type {type(x).__name__}"
            )
        inputs, labels, count = [], [], 0
        for batch in _iterate_dataset(x):
            if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                raise ValueError(
                    "The dataset should yield (inputs, labels) tuples. "
                    f"Received an element of type {type(batch).__name__}"
                )
            inputs.append(_to_numpy(batch[0]))
            labels.append(_to_numpy(batch[1]))
            count += len(inputs[-1])
            if count >= num_samples:
                break
        if not inputs:
            raise ValueError("The dataset `x` is empty.")
        x = np.concatenate(inputs)[:num_samples]
        y = np.concatenate(labels)[:num_samples]
        return x, y
    if isinstance(x, (dict, list, tuple)):
        raise ValueError(
            "`x` should be one array of inputs (models with several inputs "
            f"are not supported). Received: x of type {type(x).__name__}"
        )
    x = _to_numpy(x)
    if y is not None:
        y = _to_numpy(y)
        if len(y) != len(x):
            raise ValueError(
                "`x` and `y` should hold the same number of samples. "
                f"Received: len(x)={len(x)}, len(y)={len(y)}"
            )
    if num_samples is not None:
        x = x[:num_samples]
        y = None if y is None else y[:num_samples]
    return x, y


def _analysis_sample(x, y, include, batch_size, num_batches):
    """The sample cut to a whole number of batches, and that number.

    Labels are required when `include` has `"renyi"` or `"hsic"`.
    """
    if num_batches is not None:
        _check_positive_int("num_batches", num_batches)
    num_samples = None if num_batches is None else num_batches * batch_size
    x, y = sample_arrays(x, y, num_samples=num_samples)
    if ("renyi" in include or "hsic" in include) and y is None:
        raise ValueError(
            "Labels are needed for I(T; Y) and nHSIC(T; Y): pass `y`, or a "
            "dataset yielding (inputs, labels). Received: y=None"
        )
    available = len(x) // batch_size
    if available == 0 or (num_batches is not None and available < num_batches):
        wanted = batch_size * (num_batches or 1)
        raise ValueError(
            f"The sample should hold at least {wanted} samples "
            f"(num_batches={num_batches} batches of batch_size={batch_size}"
            "; every estimate uses the same batch size). "
            f"Received: {len(x)} samples"
        )
    num_batches = available if num_batches is None else num_batches
    num_samples = num_batches * batch_size
    x = x[:num_samples]
    y = None if y is None else y[:num_samples]
    return x, y, num_batches


# === Representations ===


def _is_greedy(model):
    return isinstance(model, GreedyLayerwiseModel)


def _available_layers(model):
    """Names of the layers whose outputs can be read, and the defaults."""
    if _is_greedy(model):
        names = [block.name for block in model.blocks]
        return names + [model.head.name], names
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise ValueError(
            "Cannot read the intermediate outputs of this model: pass a "
            "built functional or Sequential Keras model (or a "
            "keras_dib.GreedyLayerwiseModel). Subclassed models have no "
            "graph of named layers; wrap the layers of interest in a "
            f"functional model instead. Received: model of type "
            f"{type(model).__name__}"
        )
    if len(inputs) != 1:
        raise ValueError(
            "Only models with a single input are supported. Received a model "
            f"with {len(inputs)} inputs."
        )
    names = [
        layer.name
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
    ]
    return names, names


def _resolve_layer_names(model, layer_names):
    available, default = _available_layers(model)
    if len(set(available)) != len(available):
        raise ValueError(
            "The model's layers (blocks) should have unique names. "
            f"Received: {available}"
        )
    if layer_names is None:
        return list(default)
    if isinstance(layer_names, str) or not isinstance(
        layer_names, (list, tuple)
    ):
        raise ValueError(
            "`layer_names` should be a list of layer names. "
            f"Received: layer_names={layer_names!r}"
        )
    if not layer_names:
        raise ValueError(
            "`layer_names` should not be empty. Received: layer_names=[]"
        )
    for name in layer_names:
        if name not in available:
            raise ValueError(
                f"Unknown layer {name!r}. Available layers: {available}. "
                f"Received: layer_names={list(layer_names)!r}"
            )
    # Model order, whatever the order asked for.
    return [name for name in available if name in layer_names]


def _build_extractor(model, layer_names, input_shape):
    if _is_greedy(model):
        inputs = keras.Input(shape=input_shape)
        outputs = {}
        features = inputs
        for block in model.blocks:
            if len(outputs) == len(layer_names):
                break
            features = block(features)
            if block.name in layer_names:
                outputs[block.name] = features
        if model.head.name in layer_names:
            outputs[model.head.name] = model.head(features)
        outputs = [outputs[name] for name in layer_names]
        return keras.Model(inputs, outputs, name=f"{model.name}_features")
    outputs = [model.get_layer(name).output for name in layer_names]
    return keras.Model(model.inputs, outputs, name=f"{model.name}_features")


def _extractor(model, layer_names, input_shape):
    key = (tuple(layer_names), tuple(input_shape))
    cache = _EXTRACTORS.setdefault(model, {})
    if key not in cache:
        cache[key] = _build_extractor(model, layer_names, input_shape)
    return cache[key]


def _predict_representations(model, x, layer_names, batch_size):
    extractor = _extractor(model, layer_names, x.shape[1:])
    outputs = extractor.predict(x, batch_size=batch_size, verbose=0)
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    return {
        name: np.asarray(output) for name, output in zip(layer_names, outputs)
    }


def layer_representations(model, x, layer_names=None, batch_size=256):
    """Outputs of a model's layers (or greedy blocks), in inference mode.

    For a `keras_dib.GreedyLayerwiseModel` the layers are its blocks: `T_l`
    is the output of block `l`, computed by running the blocks in sequence
    (the model's `head` can be asked for by name). For any other functional
    or Sequential model they are its top-level named layers (all but the
    input layer by default), read through a feature-extraction
    `keras.Model(model.inputs, [layer.output, ...])`. The extractor is
    built once per model and layer list, and run with `predict` (jit
    compiled, no gradients, batch normalization in inference mode).

    Args:
        model: a built Keras model with one input: a
            `keras_dib.GreedyLayerwiseModel`, or a functional or Sequential
            model.
        x: array of inputs (NumPy or backend tensor).
        layer_names: optional list of layer (block) names. Defaults to
            every block of a greedy model, or every top-level layer but the
            input layer of another model. Results follow the model's order.
        batch_size: int, the batch size of `predict`. Defaults to 256.

    Returns:
        A dict `{layer_name: NumPy array}` in model order.

    Example:

    >>> from keras_dib.analysis.information import layer_representations
    >>> x = np.random.default_rng(0).uniform(size=(16, 32, 32, 3))
    >>> model = keras_dib.build_vgg(11, num_classes=43, width=4)
    >>> features = layer_representations(model, x)
    >>> features["block_stage1_1"].shape  # pooled at the end of stage 1
    (16, 16, 16, 4)
    >>> list(features)[0]
    'block_stage1_1'
    """
    _check_positive_int("batch_size", batch_size)
    layer_names = _resolve_layer_names(model, layer_names)
    x, _ = sample_arrays(x)
    return _predict_representations(model, x, layer_names, batch_size)


# === Estimators ===


def _scalar(value):
    return float(ops.convert_to_numpy(value))


def _unit(value):
    return min(max(_scalar(value), 0.0), 1.0)


def _batch_quantities(
    x, y, representations, include, alpha, sigma, k, previous, unchanged
):
    """Every requested quantity on one batch, as Python floats.

    `previous` is this batch's result from an earlier call (or None) and
    `unchanged[l]` says whether layer `l`'s representation is identical to
    what it was then: its quantities (and the matrix entries between two
    unchanged layers) are reused instead of recomputed.
    """
    size = len(representations)
    if previous is None:
        unchanged = [False] * size
    # A layer's Gram matrix is needed when the layer changed, or when the
    # matrix pairs it with a layer that changed.
    pairs_changed = "matrix" in include and not all(unchanged)
    needed = [not same or pairs_changed for same in unchanged]
    gram_x = kernels.gaussian_gram(x, sigma=sigma, num_neighbors=k)
    gram_y = None if y is None else kernels.label_gram(y)
    grams = [
        kernels.gaussian_gram(t, sigma=sigma, num_neighbors=k) if need else None
        for t, need in zip(representations, needed)
    ]
    entropies = [None] * size
    if "renyi" in include or "matrix" in include:
        entropies = [
            None if gram is None else renyi.renyi_entropy(gram, alpha=alpha)
            for gram in grams
        ]
    result = {"layers": [dict() for _ in range(size)]}
    for index in range(size):
        if unchanged[index]:
            result["layers"][index] = dict(previous["layers"][index])
    if "renyi" in include:
        if previous is not None:
            entropy_x, entropy_y = previous["H_X"], previous["H_Y"]
        else:
            entropy_x = _scalar(renyi.renyi_entropy(gram_x, alpha=alpha))
            entropy_y = _scalar(renyi.renyi_entropy(gram_y, alpha=alpha))
        result["H_X"], result["H_Y"] = entropy_x, entropy_y
        for index in range(size):
            if unchanged[index]:
                continue
            values, gram = result["layers"][index], grams[index]
            entropy = _scalar(entropies[index])
            joint_x = renyi.joint_renyi_entropy([gram_x, gram], alpha=alpha)
            joint_y = renyi.joint_renyi_entropy([gram, gram_y], alpha=alpha)
            values["I_XT"] = entropy_x + entropy - _scalar(joint_x)
            values["I_TY"] = entropy + entropy_y - _scalar(joint_y)
            values["H_T"] = entropy
    if "hsic" in include:
        # Clipped to [0, 1]: float32 rounding can overshoot 1 slightly.
        for index in range(size):
            if unchanged[index]:
                continue
            values, gram = result["layers"][index], grams[index]
            values["nHSIC_XT"] = _unit(normalized_hsic(gram_x, gram))
            values["nHSIC_TY"] = _unit(normalized_hsic(gram, gram_y))
    if "matrix" in include:
        matrix = np.zeros((size, size))
        for i in range(size):
            for j in range(i, size):
                if unchanged[i] and unchanged[j]:
                    value = previous["matrix"][i, j]
                elif i == j:
                    value = _scalar(entropies[i])
                else:
                    joint = renyi.joint_renyi_entropy(
                        [grams[i], grams[j]], alpha=alpha
                    )
                    value = _scalar(entropies[i] + entropies[j] - joint)
                matrix[i, j] = matrix[j, i] = value
        result["matrix"] = matrix
    return result


def _summarize(
    model,
    x,
    y,
    layer_names,
    include,
    alpha,
    sigma,
    num_neighbors,
    batch_size,
    num_batches,
    cache=None,
):
    """`information_summary` on a prepared sample; see its docstring.

    `cache` (a dict, updated in place) keeps the last representations and
    per-batch results, so that a later call on the same sample recomputes
    only the layers whose representation changed (for example the blocks
    being trained in a greedy fit, not the frozen ones).
    """
    representations = _predict_representations(
        model, x, layer_names, batch_size
    )
    previous_batches = None
    unchanged = [False] * len(layer_names)
    if cache is not None and cache.get("key") == (
        tuple(layer_names),
        include,
    ):
        previous_batches = cache["batches"]
        unchanged = [
            np.array_equal(representations[name], cache["features"][name])
            for name in layer_names
        ]
    batches = []
    for index in range(num_batches):
        part = slice(index * batch_size, (index + 1) * batch_size)
        batches.append(
            _batch_quantities(
                x[part],
                None if y is None else y[part],
                [representations[name][part] for name in layer_names],
                include,
                alpha,
                sigma,
                num_neighbors,
                None if previous_batches is None else previous_batches[index],
                unchanged,
            )
        )
    if cache is not None:
        cache.update(
            key=(tuple(layer_names), include),
            features=representations,
            batches=batches,
        )
    summary = {
        "layer_names": list(layer_names),
        "layers": {},
        "batch_size": int(batch_size),
        "num_batches": int(num_batches),
    }
    for position, name in enumerate(layer_names):
        keys = batches[0]["layers"][position].keys()
        summary["layers"][name] = {
            key: float(
                np.mean([batch["layers"][position][key] for batch in batches])
            )
            for key in keys
        }
    for key in ("H_X", "H_Y"):
        if key in batches[0]:
            summary[key] = float(np.mean([batch[key] for batch in batches]))
    if "matrix" in include:
        summary["mutual_information_matrix"] = np.mean(
            [batch["matrix"] for batch in batches], axis=0
        )
    return summary


def information_summary(
    model,
    x,
    y=None,
    layer_names=None,
    include=("renyi", "hsic"),
    alpha=1.01,
    sigma="knn",
    num_neighbors=10,
    batch_size=256,
    num_batches=None,
):
    """Every layer-wise information quantity in one pass over a sample.

    The sample is cut into `num_batches` batches of `batch_size` samples;
    each quantity is estimated on every batch's Gram matrices and averaged.
    Representations come from `keras_dib.analysis.layer_representations`
    (inference mode). Kernel-width rule: a Gaussian kernel per variable
    (`X` and each `T_l`) whose width is set per batch by `sigma`
    (default `"knn"`, mean distance to the 10 nearest neighbours), and the
    label kernel `[y_i == y_j]` for `Y`; see the module docstring.

    - `"renyi"`: `I_XT = I(X; T)`, `I_TY = I(T; Y)`, `H_T = H(T)`, and the
      reference entropies `H_X`, `H_Y` (matrix-based Renyi, in bits).
    - `"hsic"`: `nHSIC_XT = nHSIC(X; T)` and `nHSIC_TY = nHSIC(T; Y)`,
      in `[0, 1]`.
    - `"matrix"`: `I(T_i; T_j)` for every pair of layers (`H(T_i)` on the
      diagonal).

    Args:
        model: a built single-input Keras model (see
            `layer_representations`).
        x: array of inputs, or a dataset yielding `(inputs, labels)`
            batches (then `num_batches` is required and `y` is None).
        y: labels (integer class indices or one-hot), needed for
            `"renyi"` and `"hsic"`.
        layer_names: optional list of layer (block) names. Defaults to
            every block (greedy model) or top-level layer.
        include: names from `("renyi", "hsic", "matrix")`.
            Defaults to `("renyi", "hsic")`.
        alpha: Renyi order, > 0 and != 1. Defaults to 1.01.
        sigma: kernel-width rule (`"knn"`, `"silverman"`) or a fixed
            positive width. Defaults to `"knn"`.
        num_neighbors: the `k` of the `"knn"` rule. Defaults to 10.
        batch_size: samples per Gram matrix, >= 2. Defaults to 256.
        num_batches: number of batches to average over. Defaults to as
            many whole batches as `x` holds (the remainder is dropped).

    Returns:
        A dict with `"layer_names"` (list), `"layers"` (`{name: {key:
        float}}`), `"H_X"` and `"H_Y"` (floats, with `"renyi"`),
        `"mutual_information_matrix"` (a `(L, L)` NumPy array, with
        `"matrix"`), `"batch_size"` and `"num_batches"`.

    Example:

    >>> rng = np.random.default_rng(0)
    >>> x = rng.uniform(size=(64, 32, 32, 3)).astype("float32")
    >>> y = rng.integers(0, 4, size=64)
    >>> model = keras_dib.build_vgg(11, num_classes=4, width=4,
    ...                             granularity="stage")
    >>> summary = keras_dib.analysis.information_summary(
    ...     model, x, y, include=("renyi", "matrix"), batch_size=32
    ... )
    >>> summary["num_batches"], summary["mutual_information_matrix"].shape
    (2, (5, 5))
    >>> summary["layers"]["block_stage1"]["I_XT"] > 0
    True

    References:
        - Yu, Yu & Principe, ICASSP 2021. https://arxiv.org/abs/2102.00533
        - Sakamoto & Sato, TMLR 2024. https://arxiv.org/abs/2402.09050
    """
    include = _check_analysis_args(
        include, alpha, sigma, num_neighbors, batch_size
    )
    x, y, num_batches = _analysis_sample(x, y, include, batch_size, num_batches)
    layer_names = _resolve_layer_names(model, layer_names)
    return _summarize(
        model,
        x,
        y,
        layer_names,
        include,
        alpha,
        sigma,
        num_neighbors,
        batch_size,
        num_batches,
    )


def information_plane(
    model,
    x,
    y=None,
    layer_names=None,
    alpha=1.01,
    sigma="knn",
    num_neighbors=10,
    batch_size=256,
    num_batches=None,
):
    """Matrix-based Renyi information plane of a model's layers.

    For each layer (greedy block) `T_l`: `I(X; T_l) = H(X) + H(T_l) -
    H(X, T_l)`, `I(T_l; Y) = H(T_l) + H(Y) - H(T_l, Y)` and `H(T_l)`, with
    the matrix-based Renyi entropy of order `alpha` of Gram matrices
    (joint entropies from Hadamard products), averaged over `num_batches`
    batches of `batch_size` samples. Kernel widths: Gaussian kernels for
    `X` and `T_l` with the `sigma` rule per batch (default `"knn"`), the
    label kernel for `Y`, so `I(T; Y) <= H(Y)`.

    Args:
        model: a built single-input Keras model: a
            `keras_dib.GreedyLayerwiseModel` (its blocks are the layers) or
            a functional or Sequential model (its named layers).
        x: array of inputs, or a dataset yielding `(inputs, labels)`
            batches (then `num_batches` is required and `y` is None).
        y: labels, integer class indices or one-hot.
        layer_names: optional list of layer (block) names. Defaults to
            every block (greedy model) or top-level layer.
        alpha: Renyi order, > 0 and != 1. Defaults to 1.01.
        sigma: kernel-width rule (`"knn"`, `"silverman"`) or a fixed
            positive width. Defaults to `"knn"`.
        num_neighbors: the `k` of the `"knn"` rule. Defaults to 10.
        batch_size: samples per Gram matrix, >= 2. Defaults to 256.
        num_batches: batches to average over. Defaults to every whole
            batch in `x`.

    Returns:
        A dict `{layer_name: {"I_XT": float, "I_TY": float, "H_T": float}}`
        in model order, in bits.

    Example:

    >>> rng = np.random.default_rng(0)
    >>> x = rng.uniform(size=(64, 32, 32, 3)).astype("float32")
    >>> y = rng.integers(0, 4, size=64)
    >>> model = keras_dib.build_vgg(11, num_classes=4, width=4,
    ...                             granularity="stage")
    >>> plane = keras_dib.analysis.information_plane(
    ...     model, x, y, batch_size=32
    ... )
    >>> list(plane)  # one block per VGG stage
    ['block_stage1', 'block_stage2', 'block_stage3', 'block_stage4',
     'block_stage5']
    >>> 0 < plane["block_stage1"]["I_TY"] <= 2.0  # I(T; Y) <= H(Y) <= 2
    True

    References:
        - Yu, Yu & Principe, ICASSP 2021. https://arxiv.org/abs/2102.00533
        - Yu, Wickstrom, Jenssen & Principe, IEEE TNNLS 2020.
          https://arxiv.org/abs/1804.06537
    """
    summary = information_summary(
        model,
        x,
        y,
        layer_names=layer_names,
        include=("renyi",),
        alpha=alpha,
        sigma=sigma,
        num_neighbors=num_neighbors,
        batch_size=batch_size,
        num_batches=num_batches,
    )
    return summary["layers"]


def hsic_plane(
    model,
    x,
    y=None,
    layer_names=None,
    sigma="knn",
    num_neighbors=10,
    batch_size=256,
    num_batches=None,
):
    """Normalised HSIC plane of a model's layers (Sakamoto & Sato).

    For each layer (greedy block) `T_l`: `nHSIC(X; T_l)` and
    `nHSIC(T_l; Y)`, with `nHSIC(A; B) = HSIC(A, B) / sqrt(HSIC(A, A)
    HSIC(B, B))` on centred Gram matrices (`normalized_hsic` of
    `keras_dib.ops`), in `[0, 1]`, averaged over `num_batches` batches of
    `batch_size` samples. Kernels: Gaussian for `X` and `T_l` with the
    `sigma` rule per batch (default `"knn"`), the label kernel (linear
    kernel of one-hot labels) for `Y`.

    Args:
        model: a built single-input Keras model (see `information_plane`).
        x: array of inputs, or a dataset yielding `(inputs, labels)`.
        y: labels, integer class indices or one-hot.
        layer_names: optional list of layer (block) names.
        sigma: kernel-width rule or fixed width. Defaults to `"knn"`.
        num_neighbors: the `k` of the `"knn"` rule. Defaults to 10.
        batch_size: samples per Gram matrix, >= 2. Defaults to 256.
        num_batches: batches to average over. Defaults to every whole
            batch in `x`.

    Returns:
        A dict `{layer_name: {"nHSIC_XT": float, "nHSIC_TY": float}}` in
        model order.

    Example:

    >>> rng = np.random.default_rng(0)
    >>> x = rng.uniform(size=(64, 32, 32, 3)).astype("float32")
    >>> y = rng.integers(0, 4, size=64)
    >>> model = keras_dib.build_vgg(11, num_classes=4, width=4,
    ...                             granularity="stage")
    >>> plane = keras_dib.analysis.hsic_plane(model, x, y, batch_size=32)
    >>> sorted(plane["block_stage1"])
    ['nHSIC_TY', 'nHSIC_XT']
    >>> 0 <= plane["block_stage1"]["nHSIC_XT"] <= 1
    True

    References:
        - Sakamoto & Sato, TMLR 2024. https://arxiv.org/abs/2402.09050
        - Gretton, Bousquet, Smola & Schoelkopf, ALT 2005.
          https://doi.org/10.1007/11564089_7
    """
    summary = information_summary(
        model,
        x,
        y,
        layer_names=layer_names,
        include=("hsic",),
        sigma=sigma,
        num_neighbors=num_neighbors,
        batch_size=batch_size,
        num_batches=num_batches,
    )
    return summary["layers"]


def mutual_information_matrix(
    model,
    x,
    layer_names=None,
    alpha=1.01,
    sigma="knn",
    num_neighbors=10,
    batch_size=256,
    num_batches=None,
):
    """Layer-by-layer matrix-based Renyi mutual information `I(T_i; T_j)`.

    `M_ij = H(T_i) + H(T_j) - H(T_i, T_j)` for every pair of layers (greedy
    blocks), `M_ii = H(T_i)`, averaged over `num_batches` batches of
    `batch_size` samples, in bits. Gaussian kernels with the `sigma` rule
    per batch and representation (default `"knn"`). Along a chain of
    deterministic layers, row `i` decreases away from the diagonal (data
    processing inequality), up to the estimator's bias.

    Args:
        model: a built single-input Keras model (see `information_plane`).
        x: array of inputs, or a dataset yielding `(inputs, labels)`
            batches (labels are ignored; `num_batches` is then required).
        layer_names: optional list of layer (block) names.
        alpha: Renyi order, > 0 and != 1. Defaults to 1.01.
        sigma: kernel-width rule or fixed width. Defaults to `"knn"`.
        num_neighbors: the `k` of the `"knn"` rule. Defaults to 10.
        batch_size: samples per Gram matrix, >= 2. Defaults to 256.
        num_batches: batches to average over. Defaults to every whole
            batch in `x`.

    Returns:
        A tuple `(matrix, layer_names)`: a symmetric float64 NumPy array of
        shape `(L, L)` and the `L` layer names in model order.

    Example:

    >>> rng = np.random.default_rng(0)
    >>> x = rng.uniform(size=(64, 32, 32, 3)).astype("float32")
    >>> y = rng.integers(0, 4, size=64)
    >>> model = keras_dib.build_vgg(11, num_classes=4, width=4,
    ...                             granularity="stage")
    >>> matrix, names = keras_dib.analysis.mutual_information_matrix(
    ...     model, x, batch_size=32
    ... )
    >>> matrix.shape, len(names)
    ((5, 5), 5)
    >>> bool(np.allclose(matrix, matrix.T))
    True

    References:
        - Yu, Wickstrom, Jenssen & Principe, IEEE TNNLS 2020.
          https://arxiv.org/abs/1804.06537
    """
    summary = information_summary(
        model,
        x,
        None,
        layer_names=layer_names,
        include=("matrix",),
        alpha=alpha,
        sigma=sigma,
        num_neighbors=num_neighbors,
        batch_size=batch_size,
        num_batches=num_batches,
    )
    return summary["mutual_information_matrix"], summary["layer_names"]
