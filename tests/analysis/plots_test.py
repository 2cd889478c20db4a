import os
import sys

import numpy as np
import pytest

from keras_dib import analysis
from keras_dib.testing import TestCase

pytest.importorskip("matplotlib")
pytestmark = pytest.mark.backend_free


def records(num_layers=3, num_epochs=4, matrix=True):
    rng = np.random.default_rng(0)
    result = []
    for epoch in range(num_epochs):
        layers = {
            f"block_{index}": {
                "I_XT": float(rng.uniform(1, 3)),
                "I_TY": float(rng.uniform(0, 1)),
                "H_T": float(rng.uniform(3, 5)),
                "nHSIC_XT": float(rng.uniform(0, 1)),
                "nHSIC_TY": float(rng.uniform(0, 1)),
            }
            for index in range(num_layers)
        }
        record = {
            "epoch": epoch,
            "block": epoch // 2,
            "events": ["epoch", "block_end"] if epoch % 2 else ["epoch"],
            "layers": layers,
        }
        if matrix:
            values = rng.uniform(0, 1, size=(num_layers, num_layers))
            record["mutual_information_matrix"] = (values + values.T).tolist()
        result.append(record)
    return result


def png_size(path):
    """(width, height) of a PNG, read from its header."""
    with open(path, "rb") as handle:
        header = handle.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    return (
        int.from_bytes(header[16:20], "big"),
        int.from_bytes(header[20:24], "big"),
    )


class PlotTest(TestCase):
    def check_png(self, path, figsize, dpi):
        self.assertTrue(os.path.exists(path))
        width, height = png_size(path)
        self.assertEqual((width, height), (figsize[0] * dpi, figsize[1] * dpi))
        # A real drawing, not an empty canvas.
        from matplotlib import image

        pixels = image.imread(path)
        self.assertGreater(np.std(pixels[..., :3]), 0.05)

    def test_information_plane_png(self):
        path = os.path.join(self.get_temp_dir(), "plane.png")
        figure = analysis.plot_information_plane(
            records(), filepath=path, title="plane", figsize=(6, 4), dpi=50
        )
        self.check_png(path, (6, 4), 50)
        axes = figure.axes[0]
        self.assertEqual(axes.get_xlabel(), "I(X; T) (bits)")
        # One line per layer, and a legend entry for each.
        self.assertEqual(len(axes.get_lines()), 3)
        self.assertEqual(len(axes.get_legend().get_texts()), 3)

    def test_hsic_plane_from_json(self):
        import json

        folder = self.get_temp_dir()
        source = os.path.join(folder, "records.json")
        with open(source, "w") as handle:
            json.dump({"records": records()}, handle)
        path = os.path.join(folder, "hsic.png")
        figure = analysis.plot_information_plane(
            source,
            filepath=path,
            x_key="nHSIC_XT",
            y_key="nHSIC_TY",
            layer_names=["block_2", "block_0"],
            figsize=(5, 4),
            dpi=40,
        )
        self.check_png(path, (5, 4), 40)
        self.assertEqual(figure.axes[0].get_ylabel(), "nHSIC(T; Y)")
        self.assertEqual(len(figure.axes[0].get_lines()), 2)

    def test_information_curves_png(self):
        path = os.path.join(self.get_temp_dir(), "curves.png")
        figure = analysis.plot_information_curves(
            records(), filepath=path, key="H_T", figsize=(6, 4), dpi=40
        )
        self.check_png(path, (6, 4), 40)
        # Three layers plus two block-end markers.
        self.assertEqual(len(figure.axes[0].get_lines()), 5)

    def test_mutual_information_matrix_png(self):
        path = os.path.join(self.get_temp_dir(), "matrix.png")
        figure = analysis.plot_mutual_information_matrix(
            records()[-1], filepath=path, figsize=(5, 4), dpi=40
        )
        self.check_png(path, (5, 4), 40)
        labels = [t.get_text() for t in figure.axes[0].get_yticklabels()]
        self.assertEqual(labels, ["block_0", "block_1", "block_2"])
        # One annotation per cell.
        self.assertEqual(len(figure.axes[0].texts), 9)

    def test_panels_of_one_figure(self):
        from matplotlib.figure import Figure

        figure = Figure(figsize=(8, 3))
        left, right = figure.subplots(1, 2)
        returned = analysis.plot_mutual_information_matrix(np.eye(3), axes=left)
        analysis.plot_information_plane(records(), axes=right)
        self.assertIs(returned, figure)
        self.assertEqual(len(left.texts), 9)
        self.assertEqual(len(right.get_lines()), 3)

    def test_matrix_without_file(self):
        figure = analysis.plot_mutual_information_matrix(
            np.eye(2), annotate=False
        )
        self.assertEqual(len(figure.axes[0].texts), 0)

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="x_key"):
            analysis.plot_information_plane(records(), x_key="I_XY")
        with pytest.raises(ValueError, match="Unknown layers"):
            analysis.plot_information_plane(records(), layer_names=["nope"])
        with pytest.raises(ValueError, match="square"):
            analysis.plot_mutual_information_matrix(np.zeros((2, 3)))
        with pytest.raises(ValueError, match="3 names"):
            analysis.plot_mutual_information_matrix(np.eye(3), ["a"])
        with pytest.raises(ValueError, match="mutual_information_matrix"):
            analysis.plot_mutual_information_matrix(records(matrix=False)[0])

    def test_missing_matplotlib(self):
        names = {"matplotlib", "matplotlib.figure"} | {
            name for name in sys.modules if name.startswith("matplotlib.")
        }
        saved = {name: sys.modules.get(name) for name in names}
        try:
            for name in names:
                sys.modules[name] = None  # makes `import` raise ImportError
            with pytest.raises(ImportError, match="pip install matplotlib"):
                analysis.plot_information_plane(records())
        finally:
            for name, module in saved.items():
                if module is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = module
