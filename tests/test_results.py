"""results.json readers: a search that has not finished shows what completed, marked partial."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import cli, tiny_study
from tuner_service import spec as spec_module
from tuner_service.results import current
from tuner_service.table import verdict_line


def _trial(root: Path, trial_id: str, status: str, score: float | None) -> None:
    """A trial file as keras-tuner writes it (the fields results read)."""
    folder = root / f"trial_{trial_id}"
    folder.mkdir(parents=True)
    metrics = {"val_accuracy": {"direction": "max", "observations": [{"value": [score], "step": 0}]}}
    trial = {
        "trial_id": trial_id,
        "hyperparameters": {"space": [], "values": {"units_0": 50 * (int(trial_id) + 1)}},
        "metrics": {"metrics": metrics if score is not None else {}},
        "score": score,
        "best_step": 0,
        "status": status,
        "message": None,
    }
    (folder / "trial.json").write_text(json.dumps(trial))


def _interrupted_study(tmp_path: Path) -> Path:
    study = tiny_study(tmp_path, max_trials=6)
    root = tmp_path / "studies" / "tiny"
    _trial(root, "0", "COMPLETED", 0.61)
    _trial(root, "1", "COMPLETED", 0.72)
    _trial(root, "2", "RUNNING", None)
    ledger = {
        "name": "tiny",
        "state": "interrupted",
        "max_trials": 6,
        "best_score": 0.72,
        "best_trial_id": "1",
        "updated_at": 1000.0,
        "trials": {
            "0": {
                "trial_id": "0",
                "tuner_id": "worker-0",
                "status": "COMPLETED",
                "started_at": 900.0,
                "ended_at": 930.0,
                "duration": 30.0,
                "epochs": 1,
            },
            "1": {
                "trial_id": "1",
                "tuner_id": "worker-1",
                "status": "COMPLETED",
                "started_at": 905.0,
                "ended_at": 950.0,
                "duration": 45.0,
                "epochs": 1,
            },
            "2": {
                "trial_id": "2",
                "tuner_id": "worker-0",
                "status": "RUNNING",
                "started_at": 931.0,
                "ended_at": None,
                "duration": None,
                "epochs": 0,
            },
        },
        "workers": {},
    }
    (root / "service_state.json").write_text(json.dumps(ledger))
    return study


def test_results_of_an_interrupted_search_show_what_completed_marked_partial(tmp_path: Path) -> None:
    study = _interrupted_study(tmp_path)
    shown = cli("results", "--config", str(study), timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "PARTIAL (interrupted)" in shown.stdout and "worker-1" in shown.stdout
    as_json = json.loads(cli("results", "--config", str(study), "--json", timeout=120).stdout)
    assert as_json["partial"] is True and as_json["state"] == "interrupted"
    assert as_json["trials_completed"] == 2 and len(as_json["trials"]) == 3
    assert (as_json["best_trial_id"], as_json["best_val_score"]) == ("1", 0.72)
    assert as_json["objective_direction"] == "max"  # as keras-tuner recorded it in the trial files
    assert as_json["wall_seconds"] == 50.0  # first trial started (900) to last ended (950)
    assert not (tmp_path / "studies" / "tiny" / "results.json").exists()  # reading writes nothing


def test_results_json_of_a_finished_search_is_shown_as_written(tmp_path: Path) -> None:
    study = _interrupted_study(tmp_path)
    root = tmp_path / "studies" / "tiny"
    state = json.loads((root / "service_state.json").read_text())
    (root / "service_state.json").write_text(json.dumps({**state, "state": "finished"}))
    (root / "results.json").write_text(json.dumps({"name": "tiny", "state": "finished", "trials": []}))
    spec = spec_module.load(study)
    assert current(spec) == {"name": "tiny", "state": "finished", "trials": [], "partial": False}


def test_no_search_at_all_is_still_an_error(tmp_path: Path) -> None:
    result = cli("results", "--config", str(tiny_study(tmp_path)), timeout=120)
    assert result.returncode == 2 and "has the search run?" in result.stderr


def test_the_verdict_line_is_plain_and_only_where_a_baseline_exists() -> None:
    cmp = {
        "metric": "accuracy",
        "tuned": 0.776,
        "baseline": 0.788,
        "difference": -0.012,
        "test_size": 401,
        "ci95": [-0.04, 0.016],
        "mcnemar_p": 0.44,
        "verdict": "within noise",
    }
    line = verdict_line({"comparison": cmp, "data_source": "keras:fashion_mnist"})
    assert line == (
        "tuned 77.6 % vs baseline 78.8 %: difference -1.2 points (95 % CI -4.0 to +1.6), "
        "within noise on 401 test images (McNemar p = 0.44)"
    )
    assert verdict_line({"test_accuracy": 0.8}) is None
