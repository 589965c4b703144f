"""`tuner-service report`: a self-contained HTML report and its Markdown twin, from real state."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO, cli, tiny_study
from tuner_service import spec as spec_module
from tuner_service.study import files


def _assert_self_contained(page: str) -> None:
    assert page.startswith("<!doctype html>")
    # Nothing is fetched from elsewhere: no external src/href, images are data URIs.
    assert not re.search(r'(src|href)="(?!data:)', page)


def _images(page: str) -> int:
    return page.count('src="data:image/png;base64,')


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


def _ledger(project: Path, state: str, trials: dict[str, float], max_trials: int = 8) -> None:
    """The chief's service_state.json: trial i ran from 100 + 10 i to 108 + 10 i."""
    records = {
        tid: {
            "trial_id": tid,
            "tuner_id": f"worker-{i % 2}",
            "status": "COMPLETED",
            "score": score,
            "started_at": 100.0 + 10 * i,
            "ended_at": 108.0 + 10 * i,
            "epochs": 2,
        }
        for i, (tid, score) in enumerate(trials.items())
    }
    snapshot = {
        "name": "tiny",
        "state": state,
        "max_trials": max_trials,
        "trials": records,
        "updated_at": 200.0,
    }
    files.write_json_atomic(project / files.STATE, snapshot)


def _search(tmp_path: Path, scores: list[float], state: str = "finished", **study) -> spec_module.StudySpec:
    """A study directory with one trial per score (units and optimizer vary), and its ledger."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    spec = spec_module.load(tiny_study(tmp_path, max_trials=len(scores), epochs=2, **study))
    for i, score in enumerate(scores):
        hps = {"optimizer": ("sgd", "adam")[i % 2], "units": 50 * (1 + i % 4)}
        _write_trial(spec.project_dir, str(i), hps, [score])
    _ledger(spec.project_dir, state, {str(i): s for i, s in enumerate(scores)}, max_trials=len(scores))
    return spec


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
    # objective, parallel coordinates, hyperparameters, curves (importance needs 5 trials)
    assert _images(page) == 4
    assert "Best hyperparameters (trial 0, val_accuracy 0.8000)" in page
    assert "Needs at least 5 completed trials" in page
    md = (project / "report.md").read_text()
    for name in ("objective", "parallel", "hyperparameters", "curves"):
        assert f"(report_files/{name}.png)" in md
        assert (project / "report_files" / f"{name}.png").read_bytes().startswith(b"\x89PNG")
    # Best first, marked; the failed trial is listed last.
    rows = [line for line in md.splitlines() if re.match(r"\| (\*\*)?\d", line)]
    assert [r.split("|")[1].strip().strip("*").split()[0] for r in rows] == ["0", "1", "2"]
    assert '<tr class="best"><td>0 ★ best</td>' in page and page.count('class="best"') == 1
    # No header row without text: facts are a table without header, the verdict's corner is named.
    assert "<th></th>" not in page
    assert "|  |  |" not in md


def test_report_without_per_epoch_history_says_so(tmp_path: Path):
    from tuner_service.report import write_report

    spec = spec_module.load(tiny_study(tmp_path))
    _write_trial(spec.project_dir, "0", {"optimizer": "adam", "units": 100}, [0.8])
    page = write_report(spec).read_text()
    assert _images(page) == 2  # objective and hyperparameters; one trial draws no parallel lines
    assert "No per-epoch history recorded" in page


def test_report_with_no_completed_trial_says_so(tmp_path: Path):
    from tuner_service.report import write_report

    spec = spec_module.load(tiny_study(tmp_path))
    _write_trial(spec.project_dir, "0", {"optimizer": "adam", "units": 100}, [], status="FAILED")
    page = write_report(spec).read_text()  # no ledger either: a stock keras-tuner directory
    assert "No trial has completed yet." in page and _images(page) == 0
    assert "PARTIAL" not in page and "<td>trials</td><td>0 completed of max_trials 2; 1 failed</td>" in page


def test_report_of_nothing_exits_2_with_one_line(tmp_path: Path):
    proc = cli("report", "-c", str(tiny_study(tmp_path)), timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no search found" in proc.stderr
    assert not (tmp_path / "studies" / "tiny" / "report.html").exists()


def test_an_interrupted_search_is_reported_as_partial(tmp_path: Path):
    from tuner_service.report import write_report

    spec = _search(tmp_path, [0.6, 0.7, 0.65], state="interrupted")
    _write_trial(spec.project_dir, "3", {"optimizer": "sgd", "units": 50}, [], status="RUNNING")
    page = write_report(spec).read_text()
    md = (spec.project_dir / files.REPORT_MD).read_text()
    assert '<p class="banner">PARTIAL: the search was interrupted. 3 of 3 trials completed' in page
    assert "> **PARTIAL" in md
    assert "interrupted (partial)" in page
    assert "<tr><td>3</td><td>UNFINISHED</td>" in page  # it was running when the search ended
    assert "No test numbers: the chief retrains and tests the best trial when the search ends." in page


def test_a_finished_search_is_not_partial_and_results_json_decides(tmp_path: Path):
    from tuner_service.report import write_report

    spec = _search(tmp_path, [0.6, 0.7, 0.65], state="running")  # the ledger's last save
    files.write_json_atomic(spec.project_dir / files.RESULTS, {"state": "finished", "partial": False})
    page = write_report(spec).read_text()
    assert "PARTIAL" not in page and "(partial)" not in page


def test_early_stopping_shows_only_when_it_was_on_and_stopped_something(tmp_path: Path):
    from tuner_service.report.load import load
    from tuner_service.report.plots import STOPPED_EARLY, objective_legend

    spec = _search(tmp_path, [0.6, 0.7, 0.65, 0.62])
    view = load(spec)
    assert STOPPED_EARLY not in objective_legend(view)
    from tuner_service.report import write_report

    page = write_report(spec).read_text()
    assert "<td>early stopping</td><td>off</td>" in page and "<td>stopped early</td>" not in page

    stopping = {"rule": "median", "stopped": {}, "history": {}}  # on, but nothing stopped
    files.write_json_atomic(spec.project_dir / files.EARLY_STOPPING, stopping)
    assert STOPPED_EARLY not in objective_legend(load(spec))
    stopping["stopped"] = {"3": {"epoch": 1}}
    files.write_json_atomic(spec.project_dir / files.EARLY_STOPPING, stopping)
    view = load(spec)
    assert [t.trial_id for t in view.stopped_early] == ["3"]
    assert objective_legend(view)[:2] == ["trial", STOPPED_EARLY]
    page = write_report(spec).read_text()
    assert "median: 1 trials stopped" in page
    assert re.search(r"<tr><td>3</td><td>stopped early</td><td>0\.6200</td>", page)


def test_one_diverged_trial_does_not_squash_the_objective_axis(tmp_path: Path):
    from tuner_service.report.load import load
    from tuner_service.report.plots import CLIPPED, objective_legend, objective_limits

    scores = [0.78, 0.80, 0.81, 0.79, 0.83, 0.11, 0.82, 0.80]
    view = load(_search(tmp_path, scores))
    limits = objective_limits(view)
    assert limits.outliers == [0.11]
    assert 0.11 < limits.lo < 0.78 and 0.83 < limits.hi < 0.9
    assert limits.hi - limits.lo < 0.1  # the bulk fills the axis (0.11 would make it 0.7+)
    assert CLIPPED in objective_legend(view)
    assert CLIPPED not in objective_legend(load(_search(tmp_path / "b", [s for s in scores if s > 0.5])))


def test_robust_limits():
    from tuner_service.report.stats import robust_limits

    assert robust_limits([0.5, 0.6, 0.7]).outliers == []  # too few to call anything an outlier
    spread = robust_limits([0.42, 0.48, 0.51, 0.61, 0.67, 0.68, 0.73, 0.11])
    assert spread.outliers == [0.11] and spread.lo > 0.11
    same = robust_limits([0.8, 0.8, 0.8, 0.8])
    assert same.lo < 0.8 < same.hi  # a flat line still gets an axis
    high = robust_limits([1.2, 1.1, 1.15, 1.3, 9.0])  # a loss that blew up is clipped above
    assert high.outliers == [9.0] and high.hi < 9.0


def test_numeric_hyperparameters_are_drawn_at_their_value():
    from tuner_service.report.stats import axis_for

    dropout = axis_for("dropout", [0.0, 0.1, 0.2, 0.0])
    assert dropout.numeric and not dropout.log and dropout.position(0.0) == 0.0
    rate = axis_for("learning_rate", [1e-4, 1e-3, 1e-2])
    assert rate.log and rate.position(1e-3) == pytest.approx(-3)
    optimizer = axis_for("optimizer", ["sgd", "adam"])
    assert not optimizer.numeric and optimizer.categories == ("adam", "sgd")


def test_parameter_importance_finds_the_parameter_that_matters():
    from tuner_service.report.stats import importance

    hps = [{"units": u, "optimizer": o} for u in (50, 100, 200, 300) for o in ("sgd", "adam")]
    scores = [0.5 + u / 1000 for u in (50, 100, 200, 300) for _ in ("sgd", "adam")]  # units only
    found = importance(hps, scores)
    assert found is not None and found.trials == 8
    assert found.shares["units"] > 0.9 and sum(found.shares.values()) == pytest.approx(1.0)
    assert importance(hps[:4], scores[:4]) is None  # too few trials to say anything


def test_importance_and_parallel_coordinates_in_the_report(tmp_path: Path):
    from tuner_service.report import write_report

    page = write_report(_search(tmp_path, [0.6, 0.7, 0.65, 0.62, 0.68, 0.71])).read_text()
    assert "<h2>Parameter importance</h2>" in page and "Random-forest main effects: a random forest" in page
    assert "<h2>Parallel coordinates</h2>" in page
    assert _images(page) == 4  # objective, importance, parallel, hyperparameters
    assert "<td>trials&#x27; wall time (first start to last end)</td><td>58 s</td>" in page


def _verdict_page(tmp_path: Path, results: dict) -> str:
    from tuner_service.report import write_report

    spec = _search(tmp_path, [0.6, 0.7, 0.65])
    files.write_json_atomic(spec.project_dir / files.RESULTS, {"state": "finished", **results})
    return write_report(spec).read_text()


COMPARISON = {
    "metric": "accuracy",
    "tuned": 0.776,
    "baseline": 0.788,
    "difference": -0.012,
    "test_size": 401,
    "ci95": [-0.045, 0.021],
    "mcnemar_p": 0.48,
    "verdict": "within noise",
}


def test_verdict_within_noise_is_said_plainly(tmp_path: Path):
    page = _verdict_page(
        tmp_path,
        {
            "objective_direction": "max",
            "test_metrics": {"accuracy": 0.776, "loss": 0.61},
            "baseline_test_metrics": {"accuracy": 0.788, "loss": 0.58},
            "comparison": COMPARISON,
            "wall_seconds": 192.0,
        },
    )
    assert (
        '<p class="callout">Within noise: tuned 77.60 % vs baseline 78.80 % on the same 401 test images'
        in page
    )
    assert "(95 % CI -4.50 points to +2.10 points; McNemar p = 0.48)" in page
    assert "cannot tell the two models apart" in page
    assert "<td>test accuracy</td><td>78.80 %</td><td>77.60 %</td><td>-1.20 points</td>" in page
    assert "<td>test loss</td><td>0.5800</td><td>0.6100</td><td>+0.0300</td>" in page
    assert "<td>wall time</td><td>3 min 12 s</td>" in page


def test_verdict_with_a_clear_winner(tmp_path: Path):
    cmp = {**COMPARISON, "tuned": 0.85, "difference": 0.062, "ci95": [0.03, 0.09], "mcnemar_p": 0.0004}
    page = _verdict_page(tmp_path, {"comparison": {**cmp, "verdict": "tuned better"}})
    assert "Tuned better: tuned 85.00 % vs baseline 78.80 %" in page and "p = 0.0004" in page
    assert "Within noise" not in page


def test_verdict_without_a_paired_test_says_it_has_no_error_bar(tmp_path: Path):
    page = _verdict_page(tmp_path, {"test_accuracy": 0.776, "baseline_test_accuracy": 0.788})
    assert "<td>test accuracy</td><td>78.80 %</td><td>77.60 %</td><td>-1.20 points</td>" in page
    assert "no paired test" in page and 'class="callout"' not in page
    page = _verdict_page(tmp_path / "none", {})
    assert "No baseline or test numbers yet" in page


def test_a_minimised_objective_ranks_lowest_first(tmp_path: Path):
    from tuner_service.report.load import load

    spec = _search(tmp_path, [0.6, 0.4, 0.5])
    files.write_json_atomic(spec.project_dir / files.RESULTS, {"objective_direction": "min"})
    view = load(spec)
    assert view.best is not None and view.best.trial_id == "1"


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
    # objective, parallel coordinates, hyperparameters, and learning curves from per-epoch reports
    assert _images(page) == 4
    from tuner_service import fmt
    from tuner_service.experiment import active_hyperparameters

    best = active_hyperparameters("mlp", results["best_hyperparameters"])  # layers in use only
    assert 0 < len(best) <= len(results["best_hyperparameters"])
    assert f"trial {results['best_trial_id']}, val_accuracy {results['best_val_score']:.4f}" in page
    for key, value in best.items():
        assert f"<td>{key}</td><td>{fmt.value(value)}</td>" in page
    assert f"{100 * results['test_accuracy']:.2f} %" in page
    assert "PARTIAL" not in page
    md = (project / "report.md").read_text()
    rows = [line for line in md.splitlines() if re.match(r"\| (\*\*)?\d", line)]
    assert len(rows) == results["trials_completed"] == 3
    assert all(("COMPLETED" in r) != ("stopped early" in r) for r in rows)


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
    assert _images(page) == 3  # objective, hyperparameters, curves
    md = (spec.project_dir / "report.md").read_text()
    assert "| **0 ★ best** | **COMPLETED** | **0.8000** | **3** |" in md  # epochs, from the history


def test_the_screenshot_script_renders_what_a_reader_sees(tmp_path: Path):
    if shutil.which("chromium") is None:
        message = "needs Debian's chromium (bash scripts/ci-browser.sh installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs it: missing means a broken CI, not a skip
        pytest.skip(message)
    from PIL import Image

    from tuner_service.report import write_report

    page = write_report(_search(tmp_path, [0.6, 0.7, 0.65, 0.62, 0.68, 0.71]))
    shot = tmp_path / "report.png"
    script = REPO / "scripts" / "screenshot_report.sh"
    proc = subprocess.run(
        [str(script), str(page), str(shot), "1000,2000"], capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr
    image = Image.open(shot)
    assert image.size == (1000, 2000)
    # Not a blank page: text, tables and plots give many colours.
    assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 200
