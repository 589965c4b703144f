"""Your data, your model: every data source end to end through `tuner-service run`, and bad data.

Each end-to-end run is a real chief (with its final retrain) and 2 real workers on a tiny study.
The bad-data cases run the real CLI too; they fail before TensorFlow starts, in a second or two.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.user_models import KERAS_CLASSES
from tests.helpers import SHARED_KERAS_HOME, cli, tiny_study

VERDICTS = {"tuned better", "baseline better", "within noise"}


def _results(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "studies" / "tiny" / "results.json").read_text())


def _run(tmp_path: Path, env: dict[str, str] | None = None, **study: object):
    path = tiny_study(tmp_path, retrain_best=True, **study)
    return cli("run", "--config", str(path), "--workers", "2", "--no-progress", env=env, timeout=600)


def _regression_npz(path: Path, n_train: int = 160, n_test: int = 40) -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=8)
    x = rng.normal(size=(n_train + n_test, 8)).astype("float32")
    y = (x @ w + 0.1 * rng.normal(size=len(x))).astype("float32")
    np.savez(path, x_train=x[:n_train], y_train=y[:n_train], x_test=x[n_train:], y_test=y[n_train:])


def _fashion_sample() -> tuple[np.ndarray, np.ndarray]:
    """The shared Fashion-MNIST sample's training images and labels, read as the loader's files."""
    folder = SHARED_KERAS_HOME / "datasets" / "fashion-mnist"
    if not folder.is_dir():
        pytest.skip(f"Fashion-MNIST sample not found at {folder}")
    labels = np.frombuffer(gzip.open(folder / "train-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)
    images = np.frombuffer(gzip.open(folder / "train-images-idx3-ubyte.gz").read(), np.uint8, offset=16)
    return images.reshape(len(labels), 28, 28), labels


def _image_folder(root: Path, classes: tuple[int, ...] = (0, 1, 7), train: int = 24, test: int = 10) -> int:
    """``root/train/<class>/*.png`` and ``root/test/<class>/*.png`` from the shared sample."""
    from PIL import Image

    images, labels = _fashion_sample()
    for label in classes:
        idx = np.flatnonzero(labels == label)[: train + test]
        for i, j in enumerate(idx):
            split = "train" if i < train else "test"
            folder = root / split / f"class_{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[j]).save(folder / f"{j}.png")
    return len(classes) * test


def _keras_home(root: Path, n_train: int = 120, n_test: int = 40) -> Path:
    """A KERAS_HOME whose Fashion-MNIST cache is a small generated dataset in the loader's format."""
    rng = np.random.default_rng(0)
    folder = root / "datasets" / "fashion-mnist"
    folder.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        y = rng.integers(0, KERAS_CLASSES, n).astype(np.uint8)
        x = (rng.integers(0, 128, (n, 28, 28)) + 32 * y[:, None, None]).astype(np.uint8)
        header_y = np.array([2049, n], ">i4").tobytes()
        header_x = np.array([2051, n, 28, 28], ">i4").tobytes()
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(header_y + y.tobytes()))
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(header_x + x.tobytes()))
    return root


# -- end to end ----------------------------------------------------------------------------------------
@pytest.mark.e2e
def test_regression_from_an_npz_minimises_val_mae_and_compares_with_the_baseline(tmp_path: Path) -> None:
    npz = tmp_path / "houses.npz"
    _regression_npz(npz)
    result = _run(
        tmp_path,
        data={"source": f"npz:{npz}", "max_train_samples": None},
        objective={"name": "val_mae", "direction": "min"},
        baseline=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    res = _results(tmp_path)
    assert res["objective"] == "val_mae" and res["objective_direction"] == "min"
    scores = [t["score"] for t in res["trials"] if t["status"] == "COMPLETED"]
    assert len(scores) == 2 and res["best_val_score"] == pytest.approx(min(scores))
    assert set(res["test_metrics"]) == {"loss", "mae"} and "test_accuracy" not in res
    assert set(res["baseline_test_metrics"]) == {"loss", "mae"}
    cmp = res["comparison"]
    assert cmp["metric"] == "mae" and cmp["test_size"] == 40 and cmp["verdict"] in VERDICTS
    assert cmp["tuned"] == pytest.approx(res["test_metrics"]["mae"], rel=1e-4)
    assert cmp["ci95"][0] <= cmp["difference"] <= cmp["ci95"][1]
    assert res["partial"] is False and res["wall_seconds"] > 0

    import keras

    assert keras.models.load_model(res["best_model"]).output_shape == (None, 1)


@pytest.mark.e2e
def test_image_folder_with_the_seed_model_and_a_paired_verdict(tmp_path: Path) -> None:
    n_test = _image_folder(tmp_path / "photos")
    result = _run(
        tmp_path,
        data={
            "source": f"images:{tmp_path / 'photos'}",
            "image_size": [28, 28],
            "color_mode": "grayscale",
            "max_train_samples": None,
        },
        baseline=True,
        batch_size=16,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    res = _results(tmp_path)
    assert res["trials_completed"] == 2
    assert 0.0 <= res["test_accuracy"] <= 1.0 and res["test_metrics"]["accuracy"] == res["test_accuracy"]
    cmp = res["comparison"]
    assert cmp["metric"] == "accuracy" and cmp["test_size"] == n_test
    assert 0.0 <= cmp["mcnemar_p"] <= 1.0 and cmp["verdict"] in VERDICTS
    assert cmp["tuned"] == pytest.approx(res["test_accuracy"], abs=1e-6)
    assert cmp["baseline"] == pytest.approx(res["baseline_test_accuracy"], abs=1e-6)
    # The demo says plainly how the two compare, with the test that decided it.
    assert f"on {n_test} test images (McNemar p = " in result.stdout

    import keras

    assert keras.models.load_model(res["best_model"]).output_shape == (None, 3)  # 3 class folders


@pytest.mark.e2e
def test_user_data_function_of_datasets_and_a_fit_returning_a_dict(tmp_path: Path) -> None:
    result = _run(
        tmp_path,
        model="tests.fixtures.user_models:DictFitHyperModel",
        data={"source": "tests.fixtures.user_data:datasets", "max_train_samples": None},
        tensorboard=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    res = _results(tmp_path)
    assert res["trials_completed"] == 2 and res["best_val_score"] is not None
    assert set(res["test_metrics"]) == {"accuracy", "loss"} and res["retrain"]["test_size"] == 40
    assert "val_accuracy" in res["retrain"]["val_metrics"]
    assert "comparison" not in res and "baseline_test_accuracy" not in res
    # tensorboard: true: each trial's logs in its own folder, with keras-tuner's HParams summary.
    board = tmp_path / "studies" / "tiny" / "tensorboard"
    for trial in res["trials"]:
        events = list((board / trial["trial_id"]).rglob("events.out.tfevents.*"))
        assert events, f"no TensorBoard events for trial {trial['trial_id']}"
        assert any(b"hparams" in e.read_bytes() for e in events)


@pytest.mark.e2e
def test_keras_loader_with_a_prepared_keras_home_and_a_fit_returning_a_float(tmp_path: Path) -> None:
    home = _keras_home(tmp_path / "keras-home")
    result = _run(
        tmp_path,
        env={"KERAS_HOME": str(home)},
        model="tests.fixtures.user_models:FloatFitHyperModel",
        data={"source": "keras:fashion_mnist", "max_train_samples": None},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    res = _results(tmp_path)
    assert res["trials_completed"] == 2
    assert all(isinstance(t["score"], float) for t in res["trials"])
    assert res["retrain"]["test_size"] == 40  # the generated t10k files, not the shared sample
    assert 0.0 <= res["test_accuracy"] <= 1.0


# -- bad data: one line naming the source and the problem, exit 2, nothing written -------------------
def _npz(tmp_path: Path, **arrays: np.ndarray) -> str:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return f"npz:{path}"


def _x(n: int) -> np.ndarray:
    return np.zeros((n, 4), "float32")


def _labels(*values: int) -> np.ndarray:
    return np.array(values, "int64")


BAD_DATA = {
    "missing file": (lambda t: "npz:/no/such/data.npz", {}, "no such file: /no/such/data.npz"),
    "missing key": (
        lambda t: _npz(t, features=_x(4), y_train=_labels(0, 1, 0, 1)),
        {},
        "no array 'x_train' (the file holds ['features', 'y_train'])",
    ),
    "wrong key named": (
        lambda t: _npz(t, features=_x(4), y_train=_labels(0, 1, 0, 1)),
        {"keys": {"x_train": "feats"}},
        "no array 'feats'",
    ),
    "lengths differ": (
        lambda t: _npz(t, x_train=_x(10), y_train=_labels(0, 1, 0, 1)),
        {},
        "x_train has 10 samples but y_train has 4",
    ),
    "labels out of range": (
        lambda t: _npz(t, x_train=_x(6), y_train=_labels(0, 1, 2, 0, 1, 12)),
        {"num_classes": 3},
        "labels out of range for classification: found label 12, expected 0..2",
    ),
    "negative label": (
        lambda t: _npz(t, x_train=_x(4), y_train=_labels(0, 1, -1, 1)),
        {},
        "labels out of range for classification: found label -1",
    ),
    "empty": (
        lambda t: _npz(t, x_train=_x(0), y_train=_labels()),
        {},
        "train is empty (0 samples)",
    ),
    "folder without images": (
        lambda t: (
            (t / "pics" / "cat").mkdir(parents=True) or (t / "pics" / "dog").mkdir() or f"images:{t / 'pics'}"
        ),
        {},
        "no images (.bmp, .gif, .jpeg, .jpg, .png) in the class folders of",
    ),
    "function raises": (
        lambda t: "tests.fixtures.user_data:raises",
        {},
        "the data function raised RuntimeError: database unreachable",
    ),
    "function returns the wrong type": (
        lambda t: "tests.fixtures.user_data:wrong_type",
        {},
        "the data function returned a list; expected a dict",
    ),
    "function returns mismatched arrays": (
        lambda t: "tests.fixtures.user_data:mismatched",
        {},
        "x_train has 20 samples but y_train has 15",
    ),
    "unknown keras dataset": (lambda t: "keras:imagenet", {}, "unknown Keras dataset 'imagenet'"),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_data_is_one_clear_line_exit_2_and_nothing_written(tmp_path: Path, case: str) -> None:
    make_source, options, message = BAD_DATA[case]
    source = make_source(tmp_path)
    study = tiny_study(tmp_path, data={"source": source, **options})
    result = cli("run", "--config", str(study), "--workers", "2", "--no-progress", timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"tuner-service run: data {source!r}: "), lines
    assert message in lines[0]
    assert not (tmp_path / "studies").exists()


def test_the_chief_checks_the_data_before_it_serves(tmp_path: Path) -> None:
    source = _npz(tmp_path, x_train=_x(10), y_train=_labels(0, 1, 0, 1))
    study = tiny_study(tmp_path, data={"source": source})
    env = {"KERASTUNER_TUNER_ID": "chief", "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": "1"}
    result = cli("chief", "--config", str(study), env=env, timeout=300)
    assert result.returncode == 2
    assert f"data {source!r}: x_train has 10 samples but y_train has 4" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "studies").exists()
