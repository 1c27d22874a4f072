"""The dimension sweep's table and plot, from a sweep summary (the end-to-end run is in test_pipeline_folders)."""
from __future__ import annotations

import numpy as np
import pytest

from flows.dim_sweep import PANELS, dim_points, dimension_table, markdown_table
from stego_core.presets import ConfigError
from tasks.figures import dimension_figure


def child(dim, seed, state="Completed", **miou):
    return {"label": f"train.dim={dim},seed={seed}", "overrides": {"train.dim": dim, "seed": seed}, "state": state,
            "metrics": {m: {"mIoU": v, "accuracy": v + 0.5} for m, v in miou.items()}}


SUMMARY = {"children": [child(3, 0, stego_cluster=0.2, pca_kmeans=0.1), child(3, 1, stego_cluster=0.3, pca_kmeans=0.1),
                        child(9, 0, stego_cluster=0.4, pca_kmeans=0.25), child(9, 1, "Failed")]}


def test_points_cover_every_dimension_and_seed():
    assert dim_points([3, 9], [0, 1]) == [{"train.dim": 3, "seed": 0}, {"train.dim": 3, "seed": 1},
                                         {"train.dim": 9, "seed": 0}, {"train.dim": 9, "seed": 1}]
    with pytest.raises(ConfigError, match="at least one dimension"):
        dim_points([], [0])


def test_the_table_averages_the_completed_seeds_of_each_dimension():
    rows = {(r["dim"], r["method"]): r for r in dimension_table(SUMMARY)}
    assert set(rows) == {(3, "stego_cluster"), (3, "pca_kmeans"), (9, "stego_cluster"), (9, "pca_kmeans")}
    r = rows[(3, "stego_cluster")]
    assert r["seeds"] == 2 and r["mIoU_mean"] == pytest.approx(0.25) and r["mIoU_std"] == pytest.approx(0.05)
    assert r["accuracy_mean"] == pytest.approx(0.75)
    assert rows[(9, "stego_cluster")]["seeds"] == 1  # the failed child is left out
    text = markdown_table(dimension_table(SUMMARY)).splitlines()
    assert text[0] == "| dim | stego_cluster | pca_kmeans |"
    assert text[2] == "| 3 | 25.0 ± 5.0 / 75.0 ± 5.0 | 10.0 ± 0.0 / 60.0 ± 0.0 |"


def test_the_plot_has_one_line_per_method_with_error_bars_in_each_panel():
    fig = dimension_figure(dimension_table(SUMMARY), PANELS)
    axes = fig.axes
    assert len(axes) == 4 and axes[0].get_title() == "cluster: mIoU" and axes[2].get_title() == "cluster: accuracy"
    labels = [t.get_text() for t in axes[0].get_legend().get_texts()]
    assert labels == ["stego_cluster", "pca_kmeans"]
    line = axes[0].get_lines()[0]
    assert np.allclose(line.get_xdata(), [3, 9]) and np.allclose(line.get_ydata(), [25.0, 40.0])
    assert axes[1].get_legend() is None  # no linear methods in this summary
    with pytest.raises(ValueError, match="no finished children"):
        dimension_figure([], PANELS)
