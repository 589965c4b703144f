"""`tuner-service report`: a self-contained HTML report and its Markdown twin, from real state."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import cli, tiny_study
from tuner_service import spec as spec_module


def _assert_self_contained(page: str) -> None:
    assert page.startswith("<!doctype html>")
    # Nothing is fetched from elsewhere: no external src/href, images are data URIs.
    assert not re.search(r'(src|href)="(?!data:)', page)


def _write_trial(project: Path, trial_id: str, hps: dict, curve: list[float], status: str = "COMPLETED"):
    """A trial saved by keras-tuner itself (its real trial.json format)."""
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    hp.Choice("optimizer", ["sgd", "adam"])
    hp.Int("units", 50, 350, step=50)
    hp.values.update(hps)
    trial = keras_tuner.engine.trial.Trial(hp, trial_id=trial_id, status=status)
    trial.metrics.register("val_accuracy", "max")
    for step, value in enumerate(curve):
        trial.metrics.update("val_accuracy", value, step=step)
    if curve:
        trial.score, trial.best_step = max(curve), curve.index(max(curve))
    (project / f"trial_{trial_id}").mkdir(parents=True)
    trial.save(str(project / f"trial_{trial_id}" / "trial.json"))


def test_report_from_keras_tuner_trial_files(tmp_path: Path):
    from tuner_service.report import write_report

    spec = spec_module.load(tiny_study(tmp_path, epochs=3))
    project = spec.project_dir
    _write_trial(project, "0", {"optimizer": "adam", "units": 100}, [0.5, 0.7, 0.8])
    _write_trial(project, "1", {"optimizer": "sgd", "units": 300}, [0.2, 0.3, 0.35])
    _write_trial(project, "2", {"optimizer": "sgd", "units": 50}, [0.1], status="FAILED")
    html_path = write_report(spec)
    page = html_path.read_text()
    _assert_self_contained(page)
    assert page.count('src="data:image/png;base64,') == 3  # objective, curves, hyperparameters
    assert "Best hyperparameters (trial 0, val_accuracy 0.8000)" in page
    md = (project / "report.md").read_text()
    for name in ("objective", "curves", "hyperparameters"):
        assert f"(report_files/{name}.png)" in md
        assert (project / "report_files" / f"{name}.png").read_bytes().startswith(b"\x89PNG")
    # Best first; the failed trial is listed last.
    rows = [line for line in md.splitlines() if re.match(r"\| \d \| ", line)]
    assert [r.split("|")[1].strip() for r in rows] == ["0", "1", "2"]


def test_report_without_per_epoch_history_says_so(tmp_path: Path):
    from tuner_service.report import write_report

    spec = spec_module.load(tiny_study(tmp_path))
    _write_trial(spec.project_dir, "0", {"optimizer": "adam", "units": 100}, [0.8])
    page = write_report(spec).read_text()
    assert page.count("data:image/png;base64,") == 2
    assert "No per-epoch history recorded" in page


def test_report_of_nothing_exits_2_with_one_line(tmp_path: Path):
    proc = cli("report", "-c", str(tiny_study(tmp_path)), timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no search found" in proc.stderr
    assert not (tmp_path / "studies" / "tiny" / "report.html").exists()


@pytest.mark.e2e
def test_report_renders_from_a_real_search(tmp_path: Path):
    study = tiny_study(
        tmp_path,
        max_trials=3,
        epochs=2,
        retrain_best=True,
        early_stopping={"rule": "median", "min_epochs": 1, "min_trials": 1},
    )
    run = cli("run", "-c", str(study), "--workers", "1", "--no-progress", timeout=400)
    assert run.returncode == 0, run.stderr[-2000:]
    proc = cli("report", "-c", str(study), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    project = tmp_path / "studies" / "tiny"
    results = json.loads((project / "results.json").read_text())
    page = (project / "report.html").read_text()
    _assert_self_contained(page)
    assert page.count('src="data:image/png;base64,') == 3  # per-epoch reports give learning curves
    from tuner_service.experiment import active_hyperparameters

    best = active_hyperparameters("mlp", results["best_hyperparameters"])  # layers in use only
    assert 0 < len(best) <= len(results["best_hyperparameters"])
    assert f"trial {results['best_trial_id']}, val_accuracy {results['best_val_score']:.4f}" in page
    for key, value in best.items():
        assert f"<td>{key}</td><td>{value}</td>" in page
    assert f"{100 * results['test_accuracy']:.2f} %" in page
    md = (project / "report.md").read_text()
    assert md.count("| COMPLETED |") == results["trials_completed"] == 3


def test_learning_curves_come_from_the_chiefs_trial_history(tmp_path: Path):
    """trial.json holds keras-tuner's final report only; the chief's history has every epoch."""
    from tuner_service.report import write_report

    spec = spec_module.load(tiny_study(tmp_path, epochs=3))
    _write_trial(spec.project_dir, "0", {"optimizer": "adam", "units": 100}, [0.8])
    lines = [
        json.dumps({"trial_id": "0", "step": s, "metrics": {"val_accuracy": v}, "time": 1.0 + s})
        for s, v in enumerate([0.5, 0.7, 0.8])
    ]
    (spec.project_dir / "trial_history.jsonl").write_text("\n".join(lines) + "\n")
    page = write_report(spec).read_text()
    assert page.count("data:image/png;base64,") == 3
    md = (spec.project_dir / "report.md").read_text()
    assert "| 0 | COMPLETED | 0.8000 | 3 |" in md  # epochs trained, from the history
