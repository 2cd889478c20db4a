"""Cutting a user's functional or Sequential Keras model into greedy blocks."""

import collections

import keras

from keras_dib import _compat
from keras_dib.models.greedy import GreedyLayerwiseModel

_SOFTMAX_HINT = (
    "The model should output logits: remove the final softmax (the local "
    "objectives apply it themselves, as losses with from_logits=True do)."
)


def _graph_nodes(outputs):
    """Every node on a path to `outputs`, walking the Keras history."""
    nodes = set()
    stack = list(outputs)
    while stack:
        node = _compat.producer_node(stack.pop())
        if node in nodes:
            continue
        nodes.add(node)
        stack.extend(node.input_tensors)
    return nodes


def _ancestors(tensor):
    """Nodes computing `tensor` and everything it depends on."""
    return _graph_nodes([tensor])


def _describe(node):
    if node.is_input:
        return "the model input"
    return f"the output of layer '{node.operation.name}'"


def _segment(start, end, claimed, cut_name):
    """Nodes computing `end` from `start`, in topological order.

    Raises a `ValueError` if the segment needs any tensor other than `start`
    from before the cut: a connection crossing it, such as a skip
    connection around `cut_name`.
    """
    nodes = []
    seen = set()
    stack = [(end, None)]
    while stack:
        tensor, consumer = stack.pop()
        if tensor is start:
            continue
        node = _compat.producer_node(tensor)
        if node.is_input or node in claimed:
            raise ValueError(
                f"Cannot cut after layer '{cut_name}': {_describe(node)}, "
                "computed before the cut, is also used after it by layer "
                f"'{consumer.operation.name}' (a connection, such as a "
                "skip connection, crosses the cut). A block may pass on a "
                "single tensor only: cut where one tensor carries "
                "everything forward, for example after the layer that "
                "merges a residual branch (the `Add`)."
            )
        if node in seen:
            continue
        seen.add(node)
        nodes.append(node)
        stack.extend((t, node) for t in node.input_tensors)
    # Kahn's algorithm: order the segment's nodes from its input on.
    producers = {node: [] for node in nodes}
    consumers = collections.defaultdict(list)
    for node in nodes:
        for tensor in node.input_tensors:
            if tensor is start:
                continue
            parent = _compat.producer_node(tensor)
            if parent not in producers[node]:
                producers[node].append(parent)
                consumers[parent].append(node)
    pending = {node: len(producers[node]) for node in nodes}
    ready = [node for node in reversed(nodes) if pending[node] == 0]
    ordered = []
    while ready:
        node = ready.pop()
        ordered.append(node)
        for child in consumers[node]:
            pending[child] -= 1
            if pending[child] == 0:
                ready.append(child)
    return ordered


def _rebuild(nodes, start, end, name):
    """A functional model re-applying `nodes` to a new input like `start`."""
    inputs = keras.Input(
        batch_shape=tuple(start.shape), dtype=start.dtype, name=f"{name}_input"
    )
    tensors = {id(start): inputs}
    for node in nodes:
        args, kwargs = node.arguments.fill_in(tensors)
        outputs = node.operation(*args, **kwargs)
        for reference, value in zip(node.outputs, keras.tree.flatten(outputs)):
            tensors[id(reference)] = value
    return keras.Model(inputs, tensors[id(end)], name=name)


def _check_model(model):
    if not isinstance(model, keras.Model):
        raise ValueError(
            "`model` should be a functional or Sequential keras.Model. "
            f"Received: model={model!r}"
        )
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not inputs or not outputs:
        raise ValueError(
            "`model` should be a functional or a built Sequential model "
            "(its layer graph is what is cut). Build a Sequential model "
            "with an input shape first (`keras.Input` as its first layer). "
            "A subclassed model has no layer graph: pass its parts to "
            "keras_dib.GreedyLayerwiseModel(blocks, head, ...) instead. "
            f"Received: model={model.name!r} of type {type(model).__name__}"
        )
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(
            "`model` should have a single input and a single output (the "
            f"class logits). Received: {len(inputs)} inputs and "
            f"{len(outputs)} outputs"
        )
    output = outputs[0]
    if len(output.shape) != 2:
        raise ValueError(
            "`model` should output class logits of shape (batch, "
            f"num_classes). Received: output shape {output.shape}"
        )
    last = _compat.producer_node(output).operation
    if isinstance(last, keras.layers.Softmax) or (
        getattr(last, "activation", None) is keras.activations.softmax
    ):
        raise ValueError(
            f"`model` ends with a softmax (layer '{last.name}'). "
            + _SOFTMAX_HINT
        )


def split_model(
    model,
    cut_after,
    num_classes=None,
    auxiliary_heads=None,
    share_weights=False,
    name=None,
):
    """Cuts a functional or Sequential model into a `GreedyLayerwiseModel`.

    `cut_after` names the layers after which the network is cut, in the
    order the network applies them: `k` names give `k + 1` segments. The
    first `k` are the greedy blocks (block `i` ends with layer
    `cut_after[i]`); the last segment, the layers after the last cut, is
    the `head`, which must produce the class logits (no softmax): it is the
    classifier through which the last block is trained, like the pooling
    and Dense layers of `keras_dib.build_vgg`. Each segment becomes a small
    functional model with its own input, so the blocks save and load like
    any Keras model, and the greedy model's inference output,
    `head(block_k(... block_1(x)))`, equals the original model's.

    A cut is only possible where a single tensor carries everything
    forward: if any tensor computed before a cut (including the model
    input) is used after it other than through the cut layer's output, as
    with a skip connection around it, a `ValueError` names the layers
    involved. Cut after the layer that merges a residual branch (its
    `Add`), never inside the branch.

    By default the layers are copied (`keras.models.clone_model` with the
    same weights), so training the greedy model leaves `model` untouched;
    with `share_weights=True` the blocks reuse `model`'s own layers, and
    training one trains the other.

    Args:
        model: a functional or built Sequential `keras.Model` with one input
            and one output, the class logits.
        cut_after: list of layer names (at least one), in network order.
        num_classes: optional int; inferred from the output shape, and
            checked against it if given.
        auxiliary_heads: optional list of `len(cut_after) - 1` layers, the
            auxiliary classifiers of all blocks but the last. Defaults to
            `keras_dib.models.AuxiliaryHead(num_classes)` for each, which
            accepts feature maps `(batch, height, width, channels)` and
            features `(batch, units)`; give your own for other shapes.
        share_weights: whether the blocks use `model`'s layers (True) or
            copies of them (False, default).
        name: name of the greedy model. Defaults to `model.name`.

    Returns:
        A built `keras_dib.GreedyLayerwiseModel` with `len(cut_after)`
        blocks.

    Raises:
        ValueError: if `model` has no layer graph (a subclassed model),
            several inputs or outputs, or a softmax output; if a name in
            `cut_after` is unknown, repeated, out of order or names a layer
            applied more than once; or if a connection crosses a cut.

    Example:

    >>> inputs = keras.Input((16, 16, 3))
    >>> x = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(
    ...     inputs
    ... )
    >>> x = keras.layers.Conv2D(8, 3, activation="relu", name="conv2")(x)
    >>> x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    >>> outputs = keras.layers.Dense(10, name="logits")(x)
    >>> model = keras.Model(inputs, outputs)
    >>> greedy = keras_dib.models.split_model(model, ["conv1", "conv2"])
    >>> greedy.num_blocks  # conv1 | conv2 | head: pool + logits
    2
    >>> greedy.compile(
    ...     optimizer="adam", loss=keras_dib.losses.DIB(), metrics=["accuracy"]
    ... )
    >>> rng = np.random.default_rng(0)
    >>> x_train = rng.uniform(size=(32, 16, 16, 3)).astype("float32")
    >>> y_train = rng.integers(0, 10, size=32)
    >>> history = greedy.fit(
    ...     x_train, y_train, batch_size=16, epochs=1, verbose=0
    ... )
    >>> history.history["block"]  # one epoch per block
    [0, 1]

    References:
        - Belilovsky, Eickenberg & Oyallon, "Greedy Layerwise Learning Can
          Scale to ImageNet", ICML 2019. https://arxiv.org/abs/1812.11446
    """
    _check_model(model)
    if isinstance(cut_after, str):
        cut_after = [cut_after]
    if (
        not isinstance(cut_after, (list, tuple))
        or not cut_after
        or not all(isinstance(n, str) for n in cut_after)
    ):
        raise ValueError(
            "`cut_after` should be a non-empty list of layer names. "
            f"Received: cut_after={cut_after!r}"
        )
    repeated = sorted({n for n in cut_after if cut_after.count(n) > 1})
    if repeated:
        raise ValueError(
            f"`cut_after` should name each layer once. Received: "
            f"cut_after={list(cut_after)!r} (repeated: {repeated})"
        )
    output_classes = model.outputs[0].shape[-1]
    if num_classes is not None and num_classes != output_classes:
        raise ValueError(
            f"`num_classes` should match the model's output ({output_classes}"
            f" logits). Received: num_classes={num_classes!r}"
        )
    if not isinstance(share_weights, bool):
        raise ValueError(
            "`share_weights` should be a boolean. "
            f"Received: share_weights={share_weights!r}"
        )
    source = model
    if not share_weights:
        source = keras.models.clone_model(model)
        source.set_weights(model.get_weights())
    model_input, model_output = source.inputs[0], source.outputs[0]
    nodes_by_name = collections.defaultdict(list)
    for node in _graph_nodes([model_output]):
        if not node.is_input:
            nodes_by_name[node.operation.name].append(node)
    input_layer_name = _compat.producer_node(model.inputs[0]).operation.name
    cut_tensors = []
    for layer_name in cut_after:
        nodes = nodes_by_name.get(layer_name)
        if not nodes and layer_name == input_layer_name:
            raise ValueError(
                f"Cannot cut after the input layer '{layer_name}': the "
                "first block would be empty. Name the last layer of the "
                "first block."
            )
        if not nodes:
            raise ValueError(
                f"No layer named '{layer_name}' on the path from the input "
                f"to the output of model '{model.name}'. Its layers: "
                f"{[layer.name for layer in model.layers]}"
            )
        if len(nodes) > 1:
            raise ValueError(
                f"Cannot cut after layer '{layer_name}': it is applied "
                f"{len(nodes)} times in the model (a shared layer), so its "
                "output is not one tensor."
            )
        if len(nodes[0].outputs) != 1:
            raise ValueError(
                f"Cannot cut after layer '{layer_name}': it has "
                f"{len(nodes[0].outputs)} outputs, and a block passes on "
                "a single tensor."
            )
        if nodes[0].outputs[0] is model_output:
            raise ValueError(
                f"Cannot cut after layer '{layer_name}': it produces the "
                "model's output, which leaves no layers for the head. The "
                "last cut should come before the classifier layers."
            )
        cut_tensors.append(nodes[0].outputs[0])
    for index in range(1, len(cut_tensors)):
        if _compat.producer_node(cut_tensors[index]) in _ancestors(
            cut_tensors[index - 1]
        ):
            raise ValueError(
                "`cut_after` should list the layers in the order the "
                f"network applies them: '{cut_after[index]}' comes before "
                f"'{cut_after[index - 1]}'. Received: "
                f"cut_after={list(cut_after)!r}"
            )
    boundaries = [model_input] + cut_tensors + [model_output]
    names = [f"block_{index + 1}" for index in range(len(cut_tensors))] + [
        "head"
    ]
    claimed = set()
    segments = []
    owner = {}
    for index, segment_name in enumerate(names):
        start, end = boundaries[index], boundaries[index + 1]
        cut_name = cut_after[index - 1] if index else None
        nodes = _segment(start, end, claimed, cut_name)
        for node in nodes:
            previous = owner.get(id(node.operation))
            if previous is not None and previous != segment_name:
                raise ValueError(
                    f"Cannot split model '{model.name}' there: layer "
                    f"'{node.operation.name}' is applied in both "
                    f"{previous} and {segment_name} (a shared layer). Cut "
                    "so that each shared layer stays within one block."
                )
            owner[id(node.operation)] = segment_name
        claimed.update(nodes)
        segments.append((nodes, start, end, segment_name))
    submodels = [_rebuild(*segment) for segment in segments]
    return GreedyLayerwiseModel(
        submodels[:-1],
        head=submodels[-1],
        auxiliary_heads=auxiliary_heads,
        num_classes=output_classes,
        input_shape=tuple(model_input.shape[1:]),
        name=name or model.name,
    )
