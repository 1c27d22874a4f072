"""``models:/`` references, the pyfunc's signature and requirements, and the split digest of the dataset inputs
(no server: the registry itself is exercised in tests/flows/test_registry_e2e.py)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from stego_core.data import Sample
from stego_core.digest import listing_digest
from tasks.registry import ModelRef, model_signature, parse_model_ref, pip_requirements
from tasks.tracking import dataset_inputs


@pytest.mark.parametrize("ref, parsed", [
    ("models:/camvid/1", ModelRef("models:/camvid/1", "camvid", version="1")),
    ("models:/camvid@champion", ModelRef("models:/camvid@champion", "camvid", alias="champion")),
    (" models:/my-model/12/ ", ModelRef("models:/my-model/12/", "my-model", version="12")),
    ("models:/m-" + "a" * 32, ModelRef("models:/m-" + "a" * 32, "m-" + "a" * 32)),
    ("runs:/" + "a" * 32, None),
    ("runs/latest", None),
])
def test_model_references(ref, parsed):
    assert parse_model_ref(ref) == parsed


@pytest.mark.parametrize("ref, message", [
    ("models:/camvid", r"--run 'models:/camvid': no version or alias; expected models:/NAME/VERSION \(a number\) or "
                       r"models:/NAME@ALIAS"),
    ("models:/camvid/latest", r"version 'latest' is not a number"),
    ("models:/a/1/2", r"expected models:/NAME/VERSION"),
    ("models:/", r"expected models:/NAME/VERSION"),
])
def test_malformed_model_references_say_the_forms(ref, message):
    with pytest.raises(ValueError, match=message):
        parse_model_ref(ref)


def test_the_signature_takes_one_rgb_image_and_gives_its_map():
    sig = model_signature()
    (image,), (out,) = sig.inputs.inputs, sig.outputs.inputs
    assert (image.name, image.shape, image.type) == (None, (-1, -1, 3), np.dtype(np.uint8))  # unnamed: an array
    assert (out.name, out.shape, out.type) == (None, (-1, -1), np.dtype(np.uint8))
    assert sig.params.params[0].name == "output" and sig.params.params[0].default == "classes"
    pins = dict(p.split("==") for p in pip_requirements())
    assert {"mlflow", "torch", "timm", "numpy"} <= set(pins) and "prefect" not in pins


def test_listing_digest_sees_names_and_sizes_not_mtimes_or_roots(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        root.mkdir()
        (root / "x.png").write_bytes(b"12345")
    files = lambda root: [root / "x.png", None]  # noqa: E731 (an unlabelled image)
    digest = listing_digest(files(a), a)
    assert digest == listing_digest(files(b), b)  # the same files under another root
    os.utime(a / "x.png", (1, 1))
    assert listing_digest(files(a), a) == digest
    (a / "x.png").write_bytes(b"123456")
    assert listing_digest(files(a), a) != digest
    (b / "x.png").rename(b / "y.png")
    assert listing_digest([b / "y.png", None], b) != digest


def test_dataset_inputs_name_the_splits_with_their_counts(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    samples = []
    for i in range(3):
        (images / f"{i}.png").write_bytes(b"x" * (i + 1))
        samples.append(Sample(str(i), images / f"{i}.png", None))
    config = {"data": {"dataset": "camvid", "eval_dataset": None, "subset": None, "train_split": "train",
                       "eval_split": "val", "train_limit": None, "eval_limit": 2}}
    train, evaluation = dataset_inputs(config, samples, samples[:2])
    assert [t.value for t in train.tags] == ["training"] and [t.value for t in evaluation.tags] == ["evaluation"]
    assert (train.dataset.name, evaluation.dataset.name) == ("camvid/train", "camvid/val")
    assert json.loads(train.dataset.source) == {"uri": str(images)}
    assert json.loads(evaluation.dataset.profile) == {"num_images": 2, "num_labelled": 0, "dataset": "camvid",
                                                      "split": "val", "limit": 2}
    assert train.dataset.digest != evaluation.dataset.digest and len(train.dataset.digest) == 16



def test_the_pyfunc_gives_the_segmenters_maps_for_an_image_and_a_batch(tmp_path):
    """A hand-made run folder saved as the pyfunc and loaded back (in this process; a fresh one, from the
    registry: tests/flows/test_registry_e2e.py): the segmenter's class map, raw clusters on request."""
    import mlflow.pyfunc

    from stego_core.inference import Segmenter
    from tasks.registry import save_model
    from tests_helpers import hand_made_run

    run = hand_made_run(tmp_path / "run")
    save_model(run, tmp_path / "model")
    model = mlflow.pyfunc.load_model(str(tmp_path / "model"), model_config={"device": "cpu"})
    segmenter = Segmenter.from_run(run, device="cpu")
    image = np.random.default_rng(3).integers(0, 256, size=(31, 47, 3), dtype=np.uint8)
    assert np.array_equal(model.predict(image), segmenter.classes(image))
    assert np.array_equal(model.predict(image, params={"output": "clusters"}), segmenter.clusters(image))
    batch = np.empty(2, dtype=object)
    batch[0], batch[1] = image, image[:17, :23]
    maps = model.predict(batch)
    assert [m.shape for m in maps] == [(31, 47), (17, 23)] and np.array_equal(maps[1], segmenter.classes(image[:17, :23]))
    meta = model.metadata.metadata["stego"]
    assert meta["backbone"] == "dinov2_vits14" and meta["class_names"][0] == "Sky" and meta["config"]["train"]["dim"] == 8
    with pytest.raises(Exception, match="uint8"):
        model.predict(image.astype(np.float32))
    with pytest.raises(ValueError, match="params output='labels': expected one of classes, clusters"):
        model.predict(image, params={"output": "labels"})
