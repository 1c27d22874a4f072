"""Every ``stego`` command on generated bad input: exit 2, one ``error:`` line naming the offending
file, field, filter, run or URL, and never a traceback.

Each *kind* of bad input is a function that builds one case from hypothesis draws (where a PNG is
cut, which bytes a non-image holds, which id a label holds, which key is unknown, ...) and returns
the command line and the name the message must hold. ``KINDS`` is the catalogue; its size is the
count of bad-input kinds covered (printed by ``test_catalogue_covers_every_command``). Commands run
in this process through typer's ``CliRunner`` (the real command functions, no mocks), a few examples
per kind; nothing is computed: every case fails in the checks before a stage or server starts.
"""
from __future__ import annotations

import io
import os
import re
import socket
import string
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from flows.cli import app
from tests_helpers import TINY, synthetic_folder

SETTINGS = settings(max_examples=2, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@dataclass
class Case:
    args: list[str]  # the command line after `stego`
    names: list[str]  # each must appear in the message
    env: dict | None = None  # extra environment (None values unset)


Kind = Callable[[Path, st.DataObject], Case]
KINDS: dict[str, tuple[str, Kind]] = {}  # kind -> (command, builder)


def kind(command: str):
    def register(fn: Kind) -> Kind:
        KINDS[fn.__name__] = (command, fn)
        return fn
    return register


# ----------------------------------------------------------------------------------- files
def ids_png(path: Path, ids: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(ids.astype(np.uint8)).save(path)
    return path


def eval_folders(root: Path, n: int = 3, size=(24, 16)) -> tuple[Path, Path]:
    """``n`` prediction / label PNG pairs (2 classes) of ``size`` (W, H)."""
    rng = np.random.default_rng(0)
    for i in range(n):
        ids_png(root / "pred" / f"f{i}.png", rng.integers(0, 2, size[::-1]))
        ids_png(root / "labels" / f"f{i}.png", rng.integers(0, 2, size[::-1]))
    return root / "pred", root / "labels"


def evaluate_args(pred: Path, labels: Path, *extra: str) -> list[str]:
    return ["evaluate", "--pred", str(pred), "--labels", str(labels), "--num-classes", "2", *extra]


def garbage(data: st.DataObject) -> bytes:
    """Bytes that are no image: text, random bytes, or a PNG signature followed by junk."""
    head = data.draw(st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"a,b,c\n"]))
    return head + data.draw(st.binary(min_size=1, max_size=200))


def truncated(path: Path, data: st.DataObject) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: data.draw(st.integers(8, len(raw) - 13))])  # keep the signature, lose IEND


def dataset(root: Path) -> tuple[Path, Path]:
    """A valid folder dataset (4 train + 3 val images, 3 classes) and its ``--set`` options."""
    synthetic_folder(root, "train", 4, seed=0)
    synthetic_folder(root, "val", 3, seed=1)
    return root / "train", root / "val"


def run_args(root: Path, *sets: str, extra: tuple[str, ...] = ()) -> list[str]:
    train, val = root / "train", root / "val"
    base = ["data.dataset=folder", f"data.train_images={train}/images", f"data.train_labels={train}/labels",
            f"data.eval_images={val}/images", f"data.eval_labels={val}/labels", "data.num_classes=3", *TINY,
            "data.train_limit=null", "data.eval_limit=null", *sets]
    return ["run", *sum((["--set", s] for s in base), []), "--output", str(root / "out"),
            "--artifact-root", str(root / "artifacts"), *extra]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed when the socket is: nothing listens there


NAME = st.text(string.ascii_lowercase, min_size=3, max_size=10)


# ------------------------------------------------------------------------- stego evaluate
@kind("evaluate")
def truncated_prediction(tmp, data):
    pred, labels = eval_folders(tmp)
    truncated(pred / "f1.png", data)
    return Case(evaluate_args(pred, labels), [str(pred / "f1.png")])


@kind("evaluate")
def zero_byte_prediction(tmp, data):
    pred, labels = eval_folders(tmp)
    (pred / "f2.png").write_bytes(b"")
    return Case(evaluate_args(pred, labels), [str(pred / "f2.png"), "empty"])


@kind("evaluate")
def non_image_label(tmp, data):
    pred, labels = eval_folders(tmp)
    (labels / "f0.png").write_bytes(garbage(data))
    return Case(evaluate_args(pred, labels), [str(labels / "f0.png")])


@kind("evaluate")
def colour_prediction(tmp, data):
    pred, labels = eval_folders(tmp)
    mode = data.draw(st.sampled_from(["RGB", "RGBA", "LA"]))
    Image.new(mode, (24, 16)).save(pred / "f0.png")
    return Case(evaluate_args(pred, labels), [str(pred / "f0.png"), f"mode {mode}"])


@kind("evaluate")
def prediction_of_another_size(tmp, data):
    pred, labels = eval_folders(tmp)
    w, h = data.draw(st.tuples(st.integers(1, 40), st.integers(1, 40)).filter(lambda s: s != (24, 16)))
    ids_png(pred / "f1.png", np.zeros((h, w)))
    return Case(evaluate_args(pred, labels), [str(pred / "f1.png"), f"({w}, {h})"])


@kind("evaluate")
def label_ids_out_of_range(tmp, data):
    pred, labels = eval_folders(tmp)
    bad = data.draw(st.integers(2, 254))
    ids_png(labels / "f2.png", np.full((16, 24), bad))
    return Case(evaluate_args(pred, labels), [str(labels / "f2.png"), f"[{bad}]"])


@kind("evaluate")
def sixteen_bit_label_ids_out_of_range(tmp, data):
    pred, labels = eval_folders(tmp)
    bad = data.draw(st.integers(256, 65535))
    Image.fromarray(np.full((16, 24), bad, dtype=np.uint16)).save(labels / "f0.png")
    return Case(evaluate_args(pred, labels), [str(labels / "f0.png"), f"[{bad}]"])


@kind("evaluate")
def missing_prediction_folder(tmp, data):
    _, labels = eval_folders(tmp)
    missing = tmp / data.draw(NAME)
    return Case(evaluate_args(missing, labels), [str(missing)])


@kind("evaluate")
def file_given_as_label_folder(tmp, data):
    pred, labels = eval_folders(tmp)
    return Case(evaluate_args(pred, labels / "f0.png"), [str(labels / "f0.png"), "not a directory"])


@kind("evaluate")
def unpaired_stems(tmp, data):
    pred, labels = eval_folders(tmp)
    stem = data.draw(NAME)
    ids_png(pred / f"{stem}.png", np.zeros((16, 24)))
    return Case(evaluate_args(pred, labels), [stem])


@kind("evaluate")
def class_count_out_of_range(tmp, data):
    pred, labels = eval_folders(tmp)
    n = data.draw(st.integers(-5, 0))
    args = evaluate_args(pred, labels)
    args[args.index("--num-classes") + 1] = str(n)
    return Case(args, ["num_classes", str(n)])


# ------------------------------------------------------------------------------- stego run
@kind("run")
def unknown_config_key(tmp, data):
    dataset(tmp)
    section, key = data.draw(st.sampled_from(["train", "knn", "embed", "loss"])), data.draw(NAME) + "_x"
    return Case(run_args(tmp, f"{section}.{key}=3"), [f"{section}.{key}"])


@kind("run")
def out_of_range_value(tmp, data):
    dataset(tmp)
    field, value = data.draw(st.sampled_from([("train.lr", "-0.5"), ("train.steps", "-3"), ("knn.k", "0"),
                                              ("train.batch_size", "0"), ("crf.iterations", "-1")]))
    return Case(run_args(tmp, f"{field}={value}"), [field])


@kind("run")
def wrongly_typed_value(tmp, data):
    dataset(tmp)
    field = data.draw(st.sampled_from(["train.steps", "train.lr", "knn.k"]))
    return Case(run_args(tmp, f"{field}={data.draw(NAME)}"), [field])


@kind("run")
def unknown_preset(tmp, data):
    name = data.draw(NAME)
    return Case(["run", "--preset", name, "--output", str(tmp / "out")], [name, "camvid-quick"])


@kind("run")
def config_file_not_yaml(tmp, data):
    dataset(tmp)
    path = tmp / "c.yaml"
    path.write_text(data.draw(st.sampled_from(["train:\n  steps: [3\n", "a: b: c\n", "train: {lr: 1\n", "- [\n"])))
    return Case(run_args(tmp, extra=("--config", str(path))), [str(path)])


@kind("run")
def missing_config_file(tmp, data):
    dataset(tmp)
    path = tmp / f"{data.draw(NAME)}.yaml"
    return Case(run_args(tmp, extra=("--config", str(path))), [str(path)])


@kind("run")
def weights_not_a_checkpoint(tmp, data):
    dataset(tmp)
    path = tmp / data.draw(st.sampled_from(["w.pth", "w.pt", "w.safetensors"]))
    path.write_bytes(garbage(data))
    return Case(run_args(tmp, f"embed.weights={path}"), ["embed.weights", str(path)])


@kind("run")
def weights_empty_file(tmp, data):
    dataset(tmp)
    path = tmp / "empty.pth"
    path.write_bytes(b"")
    return Case(run_args(tmp, f"embed.weights={path}"), [str(path), "empty"])


@kind("run")
def weights_of_another_network(tmp, data):
    dataset(tmp)
    path = tmp / "other.pth"
    keys = data.draw(st.lists(NAME, min_size=1, max_size=3, unique=True))
    torch.save({k: torch.zeros(data.draw(st.integers(1, 4))) for k in keys}, path)
    return Case(run_args(tmp, f"embed.weights={path}"), [str(path), "do not fit backbone"])


@kind("run")
def missing_weights_file(tmp, data):
    dataset(tmp)
    path = tmp / f"{data.draw(NAME)}.pth"
    return Case(run_args(tmp, f"embed.weights={path}"), [str(path), "does not exist"])


@kind("run")
def truncated_training_image(tmp, data):
    train, _ = dataset(tmp)
    truncated(train / "images" / "train02.png", data)
    return Case(run_args(tmp), [str(train / "images" / "train02.png")])


@kind("run")
def non_image_eval_file(tmp, data):
    _, val = dataset(tmp)
    (val / "images" / "val01.png").write_bytes(garbage(data))
    return Case(run_args(tmp), [str(val / "images" / "val01.png")])


@kind("run")
def training_label_ids_out_of_range(tmp, data):
    train, _ = dataset(tmp)
    bad = data.draw(st.integers(3, 254))
    ids_png(train / "labels" / "train01.png", np.full((48, 64), bad))
    return Case(run_args(tmp), [str(train / "labels" / "train01.png"), f"[{bad}]"])


@kind("run")
def label_of_another_size(tmp, data):
    _, val = dataset(tmp)
    w, h = data.draw(st.tuples(st.integers(20, 90), st.integers(20, 90)).filter(lambda s: s != (64, 48)))
    ids_png(val / "labels" / "val00.png", np.zeros((h, w)))
    return Case(run_args(tmp), [str(val / "labels" / "val00.png"), f"{w}x{h}"])


@kind("run")
def image_too_small(tmp, data):
    train, _ = dataset(tmp)
    side = data.draw(st.integers(1, 13))
    Image.new("RGB", (side, side)).save(train / "images" / "train00.png")
    ids_png(train / "labels" / "train00.png", np.zeros((side, side)))
    return Case(run_args(tmp), [str(train / "images" / "train00.png"), "too small"])


@kind("run")
def missing_image_folder(tmp, data):
    dataset(tmp)
    missing = tmp / data.draw(NAME)
    return Case(run_args(tmp, f"data.train_images={missing}"), [str(missing)])


@kind("run")
def unknown_backbone(tmp, data):
    dataset(tmp)
    name = data.draw(NAME)
    return Case(run_args(tmp, f"embed.backbone={name}"), [name, "dino_vits8"])


@kind("run")
def resolution_not_a_patch_multiple(tmp, data):
    dataset(tmp)
    res = data.draw(st.integers(17, 200).filter(lambda r: r % 14))
    return Case(run_args(tmp, f"embed.eval_resolution={res}"), [f"embed.eval_resolution={res}"])


@kind("run")
def unknown_dataset(tmp, data):
    name = data.draw(NAME)
    return Case(["run", "--set", f"data.dataset={name}", "--data-root", str(tmp), "--output", str(tmp / "out")],
                [name, "camvid"])


@kind("run")
def unreachable_tracking_server(tmp, data):
    dataset(tmp)
    url = f"http://127.0.0.1:{closed_port()}"
    return Case(run_args(tmp, extra=("--tracking-uri", url)), [url, "cannot be reached"])


# --------------------------------------------------------------------------- stego compare
FILTERS = st.sampled_from(["garbage ===", "params.x = ", "metrics.a >> 1", "AND AND", "params.lr = 'x' OR",
                           "tags.`a = 1", "metrics.mIoU between 1"])


@kind("compare")
def malformed_filter(tmp, data):
    text = data.draw(FILTERS)
    return Case(["compare", "--filter", text], ["--filter", text])


@kind("compare")
def unknown_experiment(tmp, data):
    name = data.draw(NAME)
    return Case(["compare", "--experiment", name], [name])


@kind("compare")
def unknown_sort_column(tmp, data):
    name = data.draw(NAME) + ".mIoU"
    return Case(["compare", "--sort", name], [name])


@kind("compare")
def tracking_uri_of_unknown_scheme(tmp, data):
    uri = f"{data.draw(NAME)}://{data.draw(NAME)}"
    return Case(["compare", "--tracking-uri", uri], [uri])


@kind("compare")
def compare_with_server_down(tmp, data):
    url = f"http://127.0.0.1:{closed_port()}"
    return Case(["compare", "--tracking-uri", url], [url])


# --------------------------------------------------------------------------- stego predict
HEX = st.text("0123456789abcdef", min_size=32, max_size=32)


@kind("predict")
def unknown_run_id(tmp, data):
    run_id = data.draw(HEX)
    form = data.draw(st.sampled_from(["{}", "runs:/{}", "runs:/{}/model"]))
    return Case(["predict", "--run", form.format(run_id), "--images", str(tmp), "--out", str(tmp / "o")], [run_id])


@kind("predict")
def malformed_model_uri(tmp, data):
    ref = data.draw(st.sampled_from(["runs:/{}", "runs:/{}/x", "models:/{}/1", "{}"])).format(data.draw(NAME))
    return Case(["predict", "--run", ref, "--images", str(tmp), "--out", str(tmp / "o")], [ref])


@kind("predict")
def folder_that_is_no_run(tmp, data):
    run = tmp / data.draw(NAME)
    run.mkdir()
    images = tmp / "images"  # a usable folder of images: the run is what is wrong
    images.mkdir()
    Image.new("RGB", (8, 8)).save(images / "a.png")
    return Case(["predict", "--run", str(run), "--images", str(images), "--out", str(tmp / "o")], [str(run)])


# ----------------------------------------------------------------------------- stego register
@kind("register")
def reference_that_is_no_run_id(tmp, data):
    ref = data.draw(st.one_of(NAME, NAME.map(lambda n: str(tmp / n))))
    return Case(["register", ref, "--name", "m"], [repr(ref)])


# ----------------------------------------------------------------------------- stego sweep
@kind("sweep")
def malformed_grid(tmp, data):
    item = data.draw(st.sampled_from(["train.lr", "train.lr=", "=1,2", "train.lr=[1,", "train.lr=1,{2"]))
    return Case(["sweep", "--grid", item, "--local"], [item])


@kind("sweep")
def grid_over_unknown_field(tmp, data):
    field = f"train.{data.draw(NAME)}_x"
    return Case(["sweep", "--grid", f"{field}=1,2", "--local"], [field])


@kind("sweep")
def sweep_over_unknown_backbone(tmp, data):
    name = data.draw(NAME)
    return Case(["sweep", "--backbone", name, "--local"], [name])


@kind("sweep")
def sweep_of_nothing(tmp, data):
    return Case(["sweep", "--local"], ["--backbone", "--grid"])


# ----------------------------------------------------------------------------- stego cache
@kind("cache")
def missing_artifact_root(tmp, data):
    root = tmp / data.draw(NAME)
    return Case(["cache", data.draw(st.sampled_from(["list", "verify"])), "--artifact-root", str(root)], [str(root)])


# ------------------------------------------------------------- stego deploy / worker / server / ui
@kind("deploy")
def deploy_without_a_server(tmp, data):
    url = f"http://127.0.0.1:{closed_port()}/api"
    return Case(["deploy"], [url], env={"PREFECT_API_URL": url})


@kind("deploy")
def missing_deployments_file(tmp, data):
    path = tmp / f"{data.draw(NAME)}.yaml"
    url = f"http://127.0.0.1:{closed_port()}/api"  # the file is checked before the server is asked
    return Case(["deploy", "--prefect-file", str(path)], [str(path)], env={"PREFECT_API_URL": url})


@kind("worker")
def worker_without_a_server(tmp, data):
    url = f"http://127.0.0.1:{closed_port()}/api"
    return Case(["worker", "--pool", data.draw(NAME)], [url, "does not answer"], env={"PREFECT_API_URL": url})


@kind("ui")
def port_that_is_no_number(tmp, data):
    command = data.draw(st.sampled_from(["ui", "server"]))
    return Case([command, "--port", data.draw(NAME)], ["Invalid value for '--port'"])


@kind("presets")
def unexpected_argument(tmp, data):
    command, extra = data.draw(st.sampled_from(["presets", "backbones"])), data.draw(NAME)
    return Case([command, extra], [extra])


# ------------------------------------------------------------------------------------ tests
RUNNER = CliRunner()


def invoke(case: Case, home: Path):
    """``stego ARGS`` in this process; a ``PREFECT_API_URL`` of the case also goes into Prefect's
    settings, which this process read once."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    env = {"STEGO_HOME": str(home), "COLUMNS": "200", "NO_COLOR": "1", **(case.env or {})}
    with temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"]} if "PREFECT_API_URL" in env else {}):
        return RUNNER.invoke(app, case.args, env=env)


@pytest.mark.parametrize("name", sorted(KINDS))
@SETTINGS
@given(data=st.data())
def test_bad_input_ends_in_one_clear_line(name, data):
    command, build = KINDS[name]
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        (tmp / "in").mkdir()
        case = build(tmp / "in", data)
        result = invoke(case, tmp / "home")
        out = result.output
        assert result.exit_code == 2, (case.args, out, result.exception)
        assert "Traceback" not in out, out
        assert result.exception is None or isinstance(result.exception, SystemExit), (out, result.exception)
        flat = re.sub(r"\s*[│╭╰─╮╯]+\s*", " ", out)  # click's usage errors come in a box, wrapped
        for needle in case.names:
            assert needle in out or needle in flat, (needle, out)
        errors = [line for line in out.splitlines() if line.startswith("error:")]
        assert len(errors) <= 1 and (errors or "Usage:" in out), out
        assert not (tmp / "in" / "artifacts").exists()  # nothing was computed


def test_catalogue_covers_every_command():
    commands = {c for c, _ in KINDS.values()}
    registered = {c.name or c.callback.__name__ for c in app.registered_commands} | {"cache"}
    print(f"\n{len(KINDS)} kinds of bad input over {len(commands)} commands: {sorted(commands)}")
    assert len(KINDS) >= 25
    assert registered - {"backbones", "server"} <= commands | {"presets", "ui"}, registered - commands
