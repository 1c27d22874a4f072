"""`stego data list / check`: on fixtures in each official layout, intact and with three bad files."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dataset_fixtures import build_cityscapes, build_cocostuff, build_potsdam
from flows.cli import app

BUILDERS = {"cocostuff27": build_cocostuff, "cityscapes27": build_cityscapes, "potsdam3": build_potsdam}
UNKNOWN = {"cocostuff27": 200, "cityscapes27": 34, "potsdam3": 9}  # an id the dataset's labels never hold


def stego(*args):
    return CliRunner().invoke(app, ["data", *map(str, args)])


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_check_passes_an_intact_fixture_and_reports_its_counts(tmp_path, name):
    fx = BUILDERS[name](tmp_path)
    out = stego("check", name, "--root", tmp_path)
    assert out.exit_code == 0, out.output
    assert f"{name} is usable" in out.output
    n_train = len(fx.images["train"])
    expected = {"cocostuff27": "49,629", "cityscapes27": "2,975", "potsdam3": "4,545"}[name]
    row = next(line for line in out.output.splitlines() if line.startswith("train "))
    assert row.split()[2:4] == [str(n_train), expected]  # found vs the paper's count
    assert "a partial copy" in out.output  # reported, not fatal


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_check_names_a_missing_label_a_truncated_image_and_an_unknown_id(tmp_path, name):
    fx = BUILDERS[name](tmp_path)
    missing = fx.labels["train"][0]
    missing.unlink()
    truncated = fx.images["train"][1]
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    unknown = fx.labels["val"][0]
    raw = fx.raw[unknown].copy()
    raw[:8, :8] = UNKNOWN[name]
    if unknown.suffix == ".mat":
        from scipy.io import savemat

        savemat(unknown, {"gt": raw.astype(np.int32)})
    else:
        Image.fromarray(raw).save(unknown)
    out = stego("check", name, "--root", tmp_path)
    assert out.exit_code == 1, out.output
    text = " ".join(out.output.split())  # long paths wrap nowhere, but be safe
    assert f"missing label: {missing}" in text
    assert f"unreadable image: {truncated}" in text
    assert f"unknown ids: {unknown}" in text and f"[{UNKNOWN[name]}]" in text
    assert f"{name} is not usable: 3 bad files" in text
    # --split narrows the check: the val split alone has only the unknown id
    val = stego("check", name, "--root", tmp_path, "--split", "val")
    assert val.exit_code == 1 and "1 bad file." in val.output and str(missing) not in val.output


def test_check_missing_dataset_and_strict_counts(tmp_path):
    out = stego("check", "cityscapes27", "--root", tmp_path)
    assert out.exit_code == 1 and "leftImg8bit/train" in out.output and "cityscapes-dataset.com" in out.output
    build_potsdam(tmp_path)
    assert stego("check", "potsdam3", "--root", tmp_path, "--split", "val").exit_code == 0
    assert stego("check", "potsdam3", "--root", tmp_path, "--split", "val", "--strict").exit_code == 1
    bad = stego("check", "potsdam3", "--root", tmp_path, "--split", "test")
    assert bad.exit_code == 2 and "has no split 'test'" in bad.output


def test_list_shows_what_is_found_where(tmp_path):
    build_cocostuff(tmp_path)
    out = stego("list", "--root", tmp_path)
    assert out.exit_code == 0, out.output
    rows = {line.split()[0]: line for line in out.output.splitlines()[1:]}
    assert "train, val" in rows["cocostuff27"] and str(tmp_path / "cocostuff") in rows["cocostuff27"]
    assert rows["potsdam3"].split()[2] == "no" and "registration" in rows["cityscapes27"]


def test_describe_counts_class_pixels_by_hand_and_caches_them(tmp_path, monkeypatch):
    from stego_core.data.describe import class_shares

    monkeypatch.setenv("STEGO_HOME", str(tmp_path / "home"))
    fx = build_potsdam(tmp_path)
    merge = {0: 0, 4: 0, 1: 1, 5: 1, 2: 2, 3: 2}
    expected = np.zeros(3, dtype=np.int64)
    for lab in fx.labels["val"]:
        for raw, cls in merge.items():
            expected[cls] += int((fx.raw[lab] == raw).sum())
    out = stego("describe", "potsdam3", "--split", "val", "--root", tmp_path)
    assert out.exit_code == 0, out.output
    for i, name in enumerate(("roads and cars", "buildings and clutter", "trees and vegetation")):
        row = next(line for line in out.output.splitlines() if name in line)
        assert row.split()[-1] == f"{100 * expected[i] / expected.sum():.2f}%"
    png = next((tmp_path / "home" / "data" / "describe").glob("potsdam3-val*.png"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cache = tmp_path / "home" / "data" / "describe"
    again = class_shares("potsdam3", "val", tmp_path, cache_dir=cache)
    assert again.from_cache and again.counts == tuple(expected)
    from scipy.io import savemat

    savemat(fx.labels["val"][0], {"gt": np.zeros_like(fx.raw[fx.labels["val"][0]], dtype=np.int32)})  # all roads now
    changed = class_shares("potsdam3", "val", tmp_path, cache_dir=cache)
    assert not changed.from_cache and changed.counts[0] > expected[0]


def test_check_names_a_label_of_another_size_than_its_image(tmp_path):
    fx = build_cityscapes(tmp_path)
    label = fx.labels["val"][1]
    Image.fromarray(fx.raw[label][:40, :60]).save(label)
    out = stego("check", "cityscapes27", "--root", tmp_path, "--split", "val")
    assert out.exit_code == 1
    assert f"bad label: {label}" in out.output and "is 60x40 (WxH) but its image is 64x48" in " ".join(out.output.split())


def test_check_reads_the_full_cocostuff_split_on_request(tmp_path):
    build_cocostuff(tmp_path, train=5, val=3, extra=2)
    out = stego("check", "cocostuff27", "--root", tmp_path, "--subset", "full", "--split", "train")
    assert out.exit_code == 0, out.output
    row = next(line for line in out.output.splitlines() if line.startswith("train "))
    assert row.split()[1:5] == ["full", "7", "118,287", "7"]  # every 2017 image, against the full split's count
