"""Figures: exact colour maps and matching on hand-built arrays, and real PNGs of the right layout."""
import numpy as np
import pytest
from PIL import Image

from tasks.figures import (
    blend,
    class_colours,
    class_ids_from_clusters,
    colorize,
    comparison_figure,
    confusion_figure,
    iou_figure,
    loss_figure,
    overlay_grid,
    row_normalised,
    save_png,
)

COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=np.uint8)


def test_cluster_ids_map_through_the_assignment_and_unmatched_become_void():
    pred = np.array([[0, 1], [2, 3]])
    out = class_ids_from_clusters(pred, [2, -1, 0, 1])
    assert out.tolist() == [[2, 255], [0, 1]]
    assert class_ids_from_clusters(pred, None).tolist() == pred.tolist()  # linear probe: already classes
    with pytest.raises(ValueError, match="cluster id 3 but the assignment has 2 entries"):
        class_ids_from_clusters(pred, [0, 1])


def test_colorize_uses_the_class_colours_and_paints_void_black():
    ids = np.array([[0, 1], [2, 255]])
    rgb = colorize(ids, COLOURS)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert rgb[0, 0].tolist() == [255, 0, 0] and rgb[0, 1].tolist() == [0, 255, 0]
    assert rgb[1, 0].tolist() == [0, 0, 255] and rgb[1, 1].tolist() == [0, 0, 0]
    assert colorize(np.array([[7, -1]]), COLOURS).tolist() == [[[0, 0, 0], [0, 0, 0]]]  # out of range: black
    with pytest.raises(ValueError, match=r"colours must be \(C, 3\)"):
        colorize(ids, np.zeros((3, 4)))


def test_blend_is_the_convex_combination():
    image = np.full((1, 1, 3), 100, np.uint8)
    colour = np.full((1, 1, 3), 200, np.uint8)
    assert blend(image, colour, alpha=0.25)[0, 0].tolist() == [125, 125, 125]
    with pytest.raises(ValueError, match="differ; resize one first"):
        blend(image, np.zeros((2, 2, 3), np.uint8))


def test_row_normalised_gives_recall_per_true_class():
    frac = row_normalised(np.array([[3, 1], [0, 0]]))
    assert frac.tolist() == [[0.75, 0.25], [0.0, 0.0]]


def test_overlay_grid_has_one_row_per_image_and_writes_a_png(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (16, 16, 3), dtype=np.uint8) for _ in range(2)]
    labels = [rng.integers(0, 3, (16, 16)) for _ in range(2)]
    preds = {"a": labels, "b": [np.full((16, 16), 255)] * 2}
    fig = overlay_grid(images, labels, preds, COLOURS, ["x", "y", "z"])
    image_axes = [ax for ax in fig.axes if ax.images]
    assert len(image_axes) == 2 * 4  # image, ground truth, a, b
    assert [ax.get_title() for ax in image_axes[:4]] == ["image", "ground truth", "a", "b"]
    png = Image.open(save_png(fig, tmp_path / "sub" / "grid.png"))
    assert png.format == "PNG" and png.size == (round(2.2 * 4 * 80), round((2.2 * 2 + 0.6) * 80))
    with pytest.raises(ValueError, match="1 b for 2 images"):
        overlay_grid(images, labels, {"b": labels[:1]}, COLOURS, ["x", "y", "z"])
    with pytest.raises(ValueError, match="no images"):
        overlay_grid([], [], {}, COLOURS, ["x", "y", "z"])


def test_confusion_figure_shows_percentages_of_each_true_class(tmp_path):
    fig = confusion_figure(np.array([[3, 1], [0, 4]]), ["a", "b"], "t")
    texts = sorted(t.get_text() for t in fig.axes[0].texts)
    assert texts == ["100", "25", "75"]  # the zero cell is left blank
    assert Image.open(save_png(fig, tmp_path / "c.png")).format == "PNG"
    with pytest.raises(ValueError, match=r"need a \(3, 3\) matrix"):
        confusion_figure(np.ones((2, 2)), ["a", "b", "c"], "t")


def test_iou_bars_one_per_class_and_method_with_gaps_for_absent_classes():
    fig = iou_figure({"m1": {"a": 0.5, "b": None}, "m2": {"a": 0.25, "b": 1.0}}, ["a", "b"])
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert len(heights) == 4
    assert heights[0] == 0.5 and np.isnan(heights[1]) and heights[2:] == [0.25, 1.0]


def test_loss_figure_draws_one_line_per_term():
    history = [{"step": 0, "loss": 1.0, "loss_self": 0.5}, {"step": 10, "loss": 0.5, "loss_self": 0.25}]
    lines = loss_figure(history).axes[0].lines
    assert [ln.get_label() for ln in lines] == ["loss", "loss_self"]
    assert lines[0].get_xdata().tolist() == [0, 10] and lines[1].get_ydata().tolist() == [0.5, 0.25]
    with pytest.raises(ValueError, match="non-empty list of rows holding 'step'"):
        loss_figure([])


def test_comparison_figure_groups_metrics_per_run():
    fig = comparison_figure(["r1", "r2"], {"m.mIoU": [0.1, 0.2], "n.mIoU": [0.3, 0.4]})
    assert [p.get_height() for p in fig.axes[0].patches] == [0.1, 0.2, 0.3, 0.4]
    with pytest.raises(ValueError, match="no runs to plot"):
        comparison_figure([], {})


def test_class_colours_come_from_the_dataset_registry():
    camvid = class_colours("camvid", 11)
    assert camvid.shape == (11, 3) and camvid[0].tolist() == [128, 128, 128]  # Sky
    custom = class_colours("folder", 4)
    assert custom.shape == (4, 3) and custom.dtype == np.uint8
