"""The study file: defaults, overrides, and one clear error list (exit 2) for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.helpers import cli
from tuner_service import spec


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_follow_the_seed() -> None:
    s = spec.validate({"name": "s", "model": "mlp"})
    assert s.tuner.type == "bayesian"
    assert s.objective == "val_accuracy"
    assert s.data.dataset == "fashion_mnist"
    assert s.project_dir == Path("runs") / "s"


def test_tuner_shorthand_and_options() -> None:
    assert spec.validate({"name": "s", "model": "cnn", "tuner": "random"}).tuner.type == "random"
    hb = spec.validate({"name": "s", "model": "cnn", "tuner": {"type": "hyperband", "factor": 2}})
    assert hb.tuner.factor == 2


def test_overrides_nest_and_parse_yaml_values(tmp_path: Path) -> None:
    path = _write(tmp_path, {"name": "s", "model": "mlp", "max_trials": 3})
    s = spec.load(
        path, ["max_trials=7", "tuner.type=random", "data.validation_split=0.1", "model=pkg.mod:build"]
    )
    assert (s.max_trials, s.tuner.type, s.data.validation_split) == (7, "random", 0.1)
    assert s.model == "pkg.mod:build"


def test_every_problem_is_reported_at_once_with_its_path() -> None:
    with pytest.raises(spec.SpecError) as err:
        spec.validate(
            {
                "name": "s",
                "tuner": {"type": "grid"},
                "max_trials": -1,
                "epochs": "ten",
                "typo_key": 1,
                "data": {"validation_split": 1.5},
            }
        )
    problems = "\n".join(err.value.problems)
    assert len(err.value.problems) == 6
    for expected in (
        "model: Field required",
        "tuner: Input tag 'grid'",
        "max_trials:",
        "epochs:",
        "typo_key: unknown key",
        "data.validation_split:",
    ):
        assert expected in problems


def test_options_of_another_tuner_are_rejected() -> None:
    with pytest.raises(spec.SpecError, match="tuner.alpha: unknown key"):
        spec.validate({"name": "s", "model": "mlp", "tuner": {"type": "random", "alpha": 0.1}})


BAD_STUDIES = {
    "unknown tuner": ({"tuner": "grid"}, "tuner: Input tag 'grid'"),
    "negative max_trials": ({"max_trials": -3}, "max_trials: Input should be greater than or equal to 1"),
    "missing model": ({"model": None}, "model: Field required"),
    "unknown key": ({"learning_rate": 0.1}, "learning_rate: unknown key"),
    "wrong type": ({"epochs": "many"}, "epochs: Input should be a valid integer"),
    "bad model ref": ({"model": "not a model"}, "model: must be 'mlp', 'cnn' or 'package.module:attr'"),
    "bad name": ({"name": "My Study"}, "name: must be lower-case"),
    "bad port": ({"metrics_port": 70000}, "metrics_port: Input should be less than or equal to 65535"),
    # Strict types: YAML's true is not 1 epoch, 1 is not true.
    "bool as int": ({"epochs": True}, "epochs: Input should be a valid integer, got true"),
    "int as bool": ({"baseline": 1}, "baseline: Input should be a valid boolean, got 1"),
    "float as int": ({"batch_size": 32.5}, "batch_size: Input should be a valid integer, got 32.5"),
    # status.proto carries trial counts as int32.
    "huge max_trials": (
        {"max_trials": 3_000_000_000},
        "max_trials: Input should be less than or equal to 1000000",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_STUDIES))
def test_bad_study_files_exit_2_with_a_clear_error_and_write_nothing(tmp_path: Path, case: str) -> None:
    change, message = BAD_STUDIES[case]
    study = {"name": "bad", "model": "mlp", "directory": str(tmp_path / "out"), **change}
    study = {k: v for k, v in study.items() if v is not None}
    result = cli("run", "--config", str(_write(tmp_path, study)), "--workers", "1", timeout=60)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_unreadable_and_malformed_files_exit_2(tmp_path: Path) -> None:
    missing = cli("results", "--config", str(tmp_path / "nope.yaml"), timeout=60)
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    malformed = cli("results", "--config", str(bad), timeout=60)
    assert malformed.returncode == 2 and "not valid YAML" in malformed.stderr


def test_bad_override_syntax_exits_2(tmp_path: Path) -> None:
    path = _write(tmp_path, {"name": "s", "model": "mlp"})
    result = cli("results", "--config", str(path), "--set", "max_trials", timeout=60)
    assert result.returncode == 2 and "expected key=value" in result.stderr


def test_changing_the_tuner_type_drops_the_old_tuners_options(tmp_path: Path) -> None:
    path = _write(tmp_path, {"name": "s", "model": "mlp", "tuner": {"type": "bayesian", "alpha": 0.1}})
    assert spec.load(path, ["tuner=random"]).tuner.type == "random"
    hb = spec.load(path, ["tuner.type=hyperband", "tuner.factor=2"]).tuner
    assert (hb.type, hb.factor) == ("hyperband", 2)
    assert spec.load(path, ["tuner.beta=3"]).tuner.alpha == 0.1  # same type: options merge


@pytest.mark.parametrize("example", sorted((Path(__file__).parents[1] / "examples").glob("*.yaml")))
def test_shipped_example_studies_are_valid(example: Path) -> None:
    study = spec.load(example, [])
    assert study.name == example.stem


@pytest.mark.parametrize(
    ("section", "typo"),
    [
        ("data", {"validation_splt": 0.1}),
        ("early_stopping", {"rule": "median", "min_epoch": 5}),
        ("tuner", {"type": "bayesian", "num_initial_point": 3}),
        ("tuner", {"type": "hyperband", "max_epoch": 3}),
        ("compute", {"mixed_precison": True}),
    ],
)
def test_a_typo_in_any_nested_section_is_an_error_naming_it(section: str, typo: dict) -> None:
    """Strict at every level: a misspelt key is never silently replaced by its default."""
    [bad_key] = [k for k in typo if k not in ("rule", "type")]
    with pytest.raises(spec.SpecError) as err:
        spec.validate({"name": "s", "model": "mlp", section: typo})
    [problem] = err.value.problems
    assert problem == f"{section}.{bad_key}: unknown key"


def _run_exits_2(tmp_path: Path, *args: str, timeout: float = 60) -> str:
    """``run`` with ``args``: exit 2, no traceback, nothing written; its stderr."""
    result = cli("run", *args, "--set", f"directory={tmp_path / 'out'}", "--workers", "1", timeout=timeout)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
    return result.stderr


def test_a_binary_study_file_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_bytes(b"name: s\nmodel: mlp\n\xff\xfe\x00\x81")
    assert "not a text file (byte 19 is not UTF-8)" in _run_exits_2(tmp_path, "--config", str(path))


def test_duplicate_keys_are_rejected_with_the_key_and_line(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text("name: s\nmodel: mlp\nepochs: 3\ndata:\n  validation_split: 0.1\nepochs: 30\n")
    err = _run_exits_2(tmp_path, "--config", str(path))
    assert "duplicate key 'epochs' (line 6; first on line 3)" in err


def test_bad_yaml_in_set_exits_2(tmp_path: Path) -> None:
    path = _write(tmp_path, {"name": "s", "model": "mlp"})
    err = _run_exits_2(tmp_path, "--config", str(path), "--set", "data={validation_split: [0.1")
    assert "--set: 1 problem in the study file:\n  - data: not valid YAML: " in err


def test_a_callable_that_is_not_build_hp_is_refused_before_any_process_starts(tmp_path: Path) -> None:
    path = _write(tmp_path, {"name": "s", "model": "os:getcwd"})
    err = _run_exits_2(tmp_path, "--config", str(path), timeout=120)
    assert "model 'os:getcwd': expected a keras_tuner.HyperModel subclass or instance, or a build(hp)" in err
    assert "getcwd() cannot be called with one argument (hp)" in err


def test_a_directory_that_is_a_file_exits_2(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("not a folder")
    path = _write(tmp_path, {"name": "s", "model": "mlp", "directory": str(tmp_path / "out")})
    result = cli("run", "--config", str(path), "--workers", "1", timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    assert (
        f"directory '{tmp_path / 'out'}': cannot create {tmp_path / 'out' / 's' / 'logs'} (Not a directory)"
        in (result.stderr)
    )
    assert "Traceback" not in result.stderr
