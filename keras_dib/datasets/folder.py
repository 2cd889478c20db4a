"""Class-per-folder image trees `<root>/<class>/<image>`, folders or zips."""

import os
import re

import numpy as np

from keras_dib.datasets import _io

_IMAGE_REGEX = re.compile(r"\.(jpe?g|png|ppm|bmp|gif|webp)$", re.IGNORECASE)
_SPLIT_REGEX = re.compile(r"^(?:(.*)/)?(train|test)/([^/]+)/([^/]+)$")


def is_image_file(rel):
    """True if the path has an image extension (jpg, png, ppm, ...)."""
    return bool(_IMAGE_REGEX.search(rel)) and not os.path.basename(
        rel
    ).startswith(".")


def decode_files(index, rels, size=None):
    """Decodes the image files `rels` of `index` into one uint8 NHWC array.

    Args:
        index: a `FileIndex`.
        rels: the paths to decode, in order.
        size: optional `(height, width)` to resize every image to; without
            it, all images must have the size of the first.

    Returns:
        A uint8 array of shape `(len(rels), height, width, 3)`.

    Raises:
        ValueError: naming the file, if an image is corrupt or (without
            `size`) has another size than the first.
    """
    if not rels:
        raise ValueError("No images to decode.")
    images = None
    for i, rel in enumerate(rels):
        try:
            image = _io.decode_image(index.read(rel), rel, size)
        except ValueError as e:
            raise ValueError(f"{e} [file: {index.describe(rel)}]") from e
        if images is None:
            images = np.empty((len(rels),) + image.shape, np.uint8)
        elif image.shape != images.shape[1:]:
            raise ValueError(
                f"Image {index.describe(rel)} has shape {image.shape}, but "
                f"the first image ({rels[0]}) has shape {images.shape[1:]}. "
                "Pass `image_size=(height, width)` to resize all images."
            )
        images[i] = image
    return images


def class_tree(rels, where):
    """Groups image paths `<root>/<class>/<file>` by class under one root.

    Returns:
        `(root, {class_name: [paths]})`.

    Raises:
        FileNotFoundError: if there are no images.
        ValueError: if images are not all exactly one folder below one root.
    """
    images = [rel for rel in rels if is_image_file(rel)]
    if not images:
        raise FileNotFoundError(
            f"No images (jpg, png, ppm, ...) found in {where}. Expected a "
            "class-per-folder tree <root>/<class>/<image>."
        )
    roots = {}
    for rel in images:
        parts = rel.split("/")
        if len(parts) < 2:
            raise ValueError(
                f"Image {rel} in {where} is not inside a class folder. "
                "Expected a class-per-folder tree <root>/<class>/<image>."
            )
        root = "/".join(parts[:-2])
        roots.setdefault(root, {}).setdefault(parts[-2], []).append(rel)
    if len(roots) > 1:
        shown = ", ".join(repr(r) for r in sorted(roots)[:5])
        raise ValueError(
            f"Images in {where} are not all one folder below a single root: "
            f"found class folders under {shown}. Expected a class-per-folder "
            "tree <root>/<class>/<image>."
        )
    root, classes = roots.popitem()
    return root, {name: sorted(paths) for name, paths in classes.items()}


def load_image_folder(path, image_size=None):
    """Loads a class-per-folder image tree into NumPy arrays.

    The tree is `<path>/<class>/<image>` (jpg, jpeg, png, ppm, bmp, gif,
    webp), either as folders or inside zip/tar archives (a zip holding
    `<root>/<class>/<image>` members works too). Classes are numbered in
    sorted order of their folder names.

    Args:
        path: a folder, or a zip/tar archive, holding the tree.
        image_size: optional `(height, width)`; images are resized to it
            (bilinear). Default None: all images must have the same size.

    Returns:
        `(x, y, class_names)`: uint8 images of shape `(N, height, width, 3)`,
        int32 labels of shape `(N,)`, and the list of class names (label
        `i` is `class_names[i]`). Images are ordered by class, then path.

    Raises:
        FileNotFoundError: if `path` does not exist or holds no images.
        ValueError: if the layout is not class-per-folder, an image is
            corrupt, or sizes differ without `image_size`.

    Example:

    ```python
    x, y, class_names = keras_dib.datasets.load_image_folder(
        "CIFAR-10-images_test.zip"
    )
    ```
    """
    with _io.FileIndex(path) as index:
        _, classes = class_tree(list(index.files), path)
        class_names = sorted(classes)
        rels, labels = [], []
        for label, name in enumerate(class_names):
            rels.extend(classes[name])
            labels.extend([label] * len(classes[name]))
        x = decode_files(index, rels, image_size)
    return x, np.asarray(labels, np.int32), class_names


def find_split_trees(index):
    """Finds `<prefix>/train/<class>/<image>` and `.../test/...` trees.

    Returns:
        `(prefix, train_classes, test_classes)`, each `*_classes` a dict
        class name -> sorted image paths; or None if there is no such tree.

    Raises:
        ValueError: if several different trees are found, or only one split.
    """
    trees = {}
    for rel in index.files:
        match = _SPLIT_REGEX.match(rel)
        if match and is_image_file(rel):
            prefix, split, class_name, _ = match.groups()
            splits = trees.setdefault(prefix or "", {"train": {}, "test": {}})
            splits[split].setdefault(class_name, []).append(rel)
    if not trees:
        return None
    complete = {p: s for p, s in trees.items() if s["train"] and s["test"]}
    if not complete:
        prefix, splits = next(iter(sorted(trees.items())))
        missing = "test" if splits["train"] else "train"
        raise FileNotFoundError(
            f"Found a class-per-folder tree in {index.path} at "
            f"'{prefix or '.'}' but no '{missing}/' split. Expected "
            "train/<class>/<image> and test/<class>/<image>."
        )
    if len(complete) > 1:
        raise ValueError(
            f"Found several train/test image trees in {index.path}: "
            f"{sorted(complete)}. Pass the folder of one as `data_dir`."
        )
    prefix, splits = complete.popitem()
    return (
        prefix,
        {k: sorted(v) for k, v in splits["train"].items()},
        {k: sorted(v) for k, v in splits["test"].items()},
    )
