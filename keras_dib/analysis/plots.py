"""Plots of information planes, curves and MI matrices (matplotlib, lazy).

matplotlib is an optional dependency, imported only when a plot is drawn.
Figures are built with `matplotlib.figure.Figure` (no `pyplot`), so plotting
works headless and leaves pyplot's global state alone.
"""

import numpy as np

from keras_dib.analysis.callback import load_records

AXIS_LABELS = {
    "I_XT": "I(X; T) (bits)",
    "I_TY": "I(T; Y) (bits)",
    "H_T": "H(T) (bits)",
    "nHSIC_XT": "nHSIC(X; T)",
    "nHSIC_TY": "nHSIC(T; Y)",
}
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">", "p")


def _matplotlib():
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "keras_dib.analysis plotting needs matplotlib, an optional "
            "dependency. Install it with `pip install matplotlib`."
        ) from error
    return matplotlib, Figure


def _layer_names(records, layer_names):
    available = list(records[0]["layers"])
    if layer_names is None:
        return available
    unknown = [name for name in layer_names if name not in available]
    if unknown:
        raise ValueError(
            f"Unknown layers {unknown}. Recorded layers: {available}. "
            f"Received: layer_names={list(layer_names)!r}"
        )
    return list(layer_names)


def _check_key(records, key, argument):
    first = next(iter(records[0]["layers"].values()))
    if key not in first:
        raise ValueError(
            f"`{argument}` should be a recorded quantity, one of "
            f"{sorted(first)}. Received: {argument}={key!r}"
        )


def _load_checked(records, layer_names, **keys):
    """Records and layer names to draw; `keys` maps argument to quantity."""
    records = load_records(records)
    names = _layer_names(records, layer_names)
    for argument, key in keys.items():
        _check_key(records, key, argument)
    return records, names


def _layer_style(matplotlib, index):
    """Colour and marker of the `index`-th layer drawn."""
    color = matplotlib.colormaps["tab10"](index % 10)
    return color, _MARKERS[index % len(_MARKERS)]


def _figure_and_axes(Figure, axes, figsize):
    if axes is not None:
        return axes.figure, axes
    figure = Figure(figsize=figsize, layout="constrained")
    return figure, figure.add_subplot()


def _label_axes(axes, x_key, y_key):
    axes.set_xlabel(AXIS_LABELS.get(x_key, x_key))
    axes.set_ylabel(AXIS_LABELS.get(y_key, y_key))
    axes.grid(alpha=0.3)


def _finish(figure, axes, title, filepath, dpi):
    if title:
        axes.set_title(title)
    if filepath is not None:
        figure.savefig(filepath, dpi=dpi)
    return figure


def plot_information_plane(
    records,
    filepath=None,
    x_key="I_XT",
    y_key="I_TY",
    layer_names=None,
    title=None,
    colormap="viridis",
    axes=None,
    figsize=(7.0, 5.0),
    dpi=150,
):
    """Draws the information plane: one trajectory per layer over epochs.

    Each layer is a line through its recorded points `(x_key, y_key)`,
    drawn in the layer's colour with its own marker; the points are filled
    with the colour of their epoch (colour bar), so that both the layer and
    the time of each point can be read. The first point of each trajectory
    is drawn small, the last one large and labelled.

    Args:
        records: an `InformationPlaneCallback`, its JSON file, or a list
            of records (see `keras_dib.analysis.load_records`).
        filepath: optional path; the figure is saved there (PNG, ...).
        x_key: quantity on the horizontal axis. Defaults to `"I_XT"`; use
            `"nHSIC_XT"` for the nHSIC plane.
        y_key: quantity on the vertical axis. Defaults to `"I_TY"`; use
            `"nHSIC_TY"` for the nHSIC plane.
        layer_names: optional subset of the recorded layers.
        title: optional title.
        colormap: matplotlib colormap of the epochs. Defaults to
            `"viridis"`.
        axes: optional matplotlib `Axes` to draw into (for example one
            panel of a larger figure). Defaults to a new figure.
        figsize: figure size in inches, for a new figure. Defaults to
            `(7.0, 5.0)`.
        dpi: resolution of the saved file. Defaults to 150.

    Returns:
        The `matplotlib.figure.Figure`.

    Raises:
        ImportError: if matplotlib is not installed.

    Example:

    >>> records = [  # as `InformationPlaneCallback.records` holds them
    ...     {"epoch": epoch, "layers": {
    ...         "block_1": {"I_XT": i_1, "I_TY": 0.5 * i_1},
    ...         "block_2": {"I_XT": i_2, "I_TY": 0.4 * i_2}}}
    ...     for epoch, i_1, i_2 in [
    ...         (0, 4.0, 3.0), (1, 4.5, 3.2), (2, 4.52, 3.6), (3, 4.5, 3.9)
    ...     ]
    ... ]
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "information_plane.png")
    >>> figure = keras_dib.analysis.plot_information_plane(
    ...     records, filepath=path
    ... )
    >>> os.path.exists(path)
    True
    """
    matplotlib, Figure = _matplotlib()
    records, names = _load_checked(
        records, layer_names, x_key=x_key, y_key=y_key
    )
    epochs = np.array([record["epoch"] for record in records], dtype=float)
    norm = matplotlib.colors.Normalize(
        vmin=epochs.min(), vmax=max(epochs.max(), epochs.min() + 1)
    )
    cmap = matplotlib.colormaps[colormap]
    figure, axes = _figure_and_axes(Figure, axes, figsize)
    for index, name in enumerate(names):
        xs = np.array([r["layers"][name][x_key] for r in records])
        ys = np.array([r["layers"][name][y_key] for r in records])
        color, marker = _layer_style(matplotlib, index)
        axes.plot(xs, ys, color=color, linewidth=1.2, alpha=0.8, zorder=1)
        sizes = np.full(len(xs), 28.0)
        sizes[0], sizes[-1] = 12.0, 70.0
        axes.scatter(
            xs,
            ys,
            c=epochs,
            cmap=cmap,
            norm=norm,
            s=sizes,
            marker=marker,
            edgecolors=[color],
            linewidths=1.0,
            zorder=2,
            label=name,
        )
        axes.annotate(
            str(index + 1),
            (xs[-1], ys[-1]),
            xytext=(4, 4),
            textcoords="offset points",
            fontsize=8,
            color=color,
        )
    mappable = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
    colorbar = figure.colorbar(mappable, ax=axes, label="epoch")
    colorbar.locator = matplotlib.ticker.MaxNLocator(integer=True)
    colorbar.update_ticks()
    handles = []
    for index, name in enumerate(names):
        color, marker = _layer_style(matplotlib, index)
        handles.append(
            matplotlib.lines.Line2D(
                [],
                [],
                color=color,
                marker=marker,
                markerfacecolor="white",
                label=f"{index + 1}: {name}",
            )
        )
    axes.legend(
        handles=handles,
        fontsize=7,
        loc="best",
        title="layer",
        title_fontsize=8,
    )
    _label_axes(axes, x_key, y_key)
    return _finish(figure, axes, title, filepath, dpi)


def plot_information_curves(
    records,
    filepath=None,
    key="I_XT",
    layer_names=None,
    title=None,
    axes=None,
    figsize=(7.0, 4.5),
    dpi=150,
):
    """Draws one quantity against the epoch, one line per layer.

    Makes the order in which layers settle visible (bottom to top or
    not). For greedy records, the ends of the blocks are marked with
    dotted vertical lines.

    Args:
        records: an `InformationPlaneCallback`, its JSON file, or a list
            of records (see `keras_dib.analysis.load_records`).
        filepath: optional path; the figure is saved there.
        key: the quantity. Defaults to `"I_XT"`.
        layer_names: optional subset of the recorded layers.
        title: optional title.
        axes: optional matplotlib `Axes` to draw into. Defaults to a new
            figure.
        figsize: figure size in inches, for a new figure. Defaults to
            `(7.0, 4.5)`.
        dpi: resolution of the saved file. Defaults to 150.

    Returns:
        The `matplotlib.figure.Figure`.

    Raises:
        ImportError: if matplotlib is not installed.

    Example:

    >>> records = [  # as `InformationPlaneCallback.records` holds them
    ...     {"epoch": epoch, "layers": {
    ...         "block_1": {"I_XT": i_1, "I_TY": 0.5 * i_1},
    ...         "block_2": {"I_XT": i_2, "I_TY": 0.4 * i_2}}}
    ...     for epoch, i_1, i_2 in [
    ...         (0, 4.0, 3.0), (1, 4.5, 3.2), (2, 4.52, 3.6), (3, 4.5, 3.9)
    ...     ]
    ... ]
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "i_xt.png")
    >>> figure = keras_dib.analysis.plot_information_curves(
    ...     records, filepath=path, key="I_XT"
    ... )
    >>> os.path.exists(path)
    True
    """
    matplotlib, Figure = _matplotlib()
    records, names = _load_checked(records, layer_names, key=key)
    epochs = [record["epoch"] for record in records]
    figure, axes = _figure_and_axes(Figure, axes, figsize)
    for record in records:
        if "block_end" in record.get("events", ()):
            axes.axvline(record["epoch"], color="gray", linestyle=":", lw=0.8)
    for index, name in enumerate(names):
        values = [record["layers"][name][key] for record in records]
        color, marker = _layer_style(matplotlib, index)
        axes.plot(
            epochs,
            values,
            color=color,
            marker=marker,
            markersize=4,
            linewidth=1.2,
            label=f"{index + 1}: {name}",
        )
    _label_axes(axes, "epoch", key)
    axes.legend(
        fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), title="layer"
    )
    return _finish(figure, axes, title, filepath, dpi)


def plot_mutual_information_matrix(
    matrix,
    layer_names=None,
    filepath=None,
    title=None,
    annotate=True,
    colormap="magma",
    axes=None,
    figsize=(6.0, 5.0),
    dpi=150,
):
    """Draws a layer-by-layer mutual information matrix as a heat map.

    The colour scale spans the off-diagonal values `I(T_i; T_j)`; the
    diagonal (`H(T_i)`, larger) is drawn in the top colour, so that the
    structure between layers stays visible. Every value is written in its
    cell.

    Args:
        matrix: square array `(L, L)`, for example from
            `keras_dib.analysis.mutual_information_matrix`, or a record
            holding a `"mutual_information_matrix"`.
        layer_names: optional list of the `L` layer names (tick labels).
            Defaults to `1..L`, or the record's layer names.
        filepath: optional path; the figure is saved there.
        title: optional title.
        annotate: whether to write each value in its cell. Defaults to
            True.
        colormap: matplotlib colormap. Defaults to `"magma"`.
        axes: optional matplotlib `Axes` to draw into. Defaults to a new
            figure.
        figsize: figure size in inches, for a new figure. Defaults to
            `(6.0, 5.0)`.
        dpi: resolution of the saved file. Defaults to 150.

    Returns:
        The `matplotlib.figure.Figure`.

    Raises:
        ImportError: if matplotlib is not installed.

    Example:

    >>> rng = np.random.default_rng(0)
    >>> x = rng.uniform(size=(64, 32, 32, 3)).astype("float32")
    >>> y = rng.integers(0, 4, size=64)
    >>> model = keras_dib.build_vgg(11, num_classes=4, width=4,
    ...                             granularity="stage")
    >>> matrix, names = keras_dib.analysis.mutual_information_matrix(
    ...     model, x, batch_size=32
    ... )
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "mi_matrix.png")
    >>> figure = keras_dib.analysis.plot_mutual_information_matrix(
    ...     matrix, names, filepath=path
    ... )
    >>> os.path.exists(path)
    True
    """
    _, Figure = _matplotlib()
    if isinstance(matrix, dict):
        if "mutual_information_matrix" not in matrix:
            raise ValueError(
                "The record holds no 'mutual_information_matrix' (record "
                "with include=('matrix', ...)). Received keys: "
                f"{sorted(matrix)}"
            )
        if layer_names is None:
            layer_names = list(matrix["layers"])
        matrix = matrix["mutual_information_matrix"]
    matrix = np.asarray(matrix, dtype=float)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(
            "`matrix` should be a square (L, L) array. "
            f"Received: matrix.shape={matrix.shape}"
        )
    size = matrix.shape[0]
    if layer_names is None:
        layer_names = [str(index + 1) for index in range(size)]
    if len(layer_names) != size:
        raise ValueError(
            f"`layer_names` should hold {size} names, one per row. "
            f"Received: {len(layer_names)} names"
        )
    figure, axes = _figure_and_axes(Figure, axes, figsize)
    off_diagonal = matrix[~np.eye(size, dtype=bool)]
    if off_diagonal.size and np.ptp(off_diagonal) > 0:
        low, high = np.nanmin(off_diagonal), np.nanmax(off_diagonal)
    else:
        low, high = np.nanmin(matrix), np.nanmax(matrix)
    image = axes.imshow(matrix, cmap=colormap, vmin=low, vmax=high)
    figure.colorbar(image, ax=axes, label="I(T_i; T_j) (bits)")
    rotation = 45 if max(len(name) for name in layer_names) > 3 else 0
    axes.set_xticks(range(size))
    axes.set_yticks(range(size))
    axes.set_xticklabels(
        layer_names,
        rotation=rotation,
        ha="right" if rotation else "center",
        fontsize=7,
    )
    axes.set_yticklabels(layer_names, fontsize=7)
    if annotate:
        middle = (low + high) / 2
        for i in range(size):
            for j in range(size):
                axes.text(
                    j,
                    i,
                    f"{matrix[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="black" if matrix[i, j] > middle else "white",
                )
    return _finish(figure, axes, title, filepath, dpi)
