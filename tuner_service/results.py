"""After a search: retrain the best hyperparameters, test them, write results.json.

Test data is used only here, after the search has chosen: never for choosing.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner_service import data
from tuner_service.spec import StudySpec
from tuner_service.study import files
from tuner_service.study.files import read_json, write_json_atomic
from tuner_service.study.ledger import read_snapshot

if TYPE_CHECKING:
    import keras_tuner

log = logging.getLogger(__name__)


def _trials(project_dir: Path) -> list[keras_tuner.engine.trial.Trial]:
    import keras_tuner

    trials = []
    for path in files.StudyDir(project_dir).trial_files():
        trials.append(keras_tuner.engine.trial.Trial.load(str(path)))
    return trials


def trial_rows(spec: StudySpec) -> list[dict[str, Any]]:
    """One row per trial, from keras-tuner's trial files and the chief's ledger."""
    project = spec.project_dir
    ledger = (read_snapshot(project) or {}).get("trials", {})
    rows = []
    for trial in _trials(project):
        extra = ledger.get(trial.trial_id, {})
        rows.append(
            {
                "trial_id": trial.trial_id,
                "status": trial.status,
                "score": trial.score,
                "tuner_id": extra.get("tuner_id"),
                "duration": extra.get("duration"),
                "epochs": extra.get("epochs"),
                "hyperparameters": dict(trial.hyperparameters.values),
                "message": (trial.message or "").strip().splitlines()[-1:] or None,
            }
        )
    return rows


def _fit_and_test(model: Any, fit: Any, splits: data.Splits, epochs: int, spec: StudySpec) -> dict:
    start = time.time()
    history = fit(
        model,
        splits.x_train,
        splits.y_train,
        validation_data=(splits.x_val, splits.y_val),
        epochs=epochs,
        batch_size=spec.batch_size,
        verbose=0,
    )
    loss, accuracy = model.evaluate(splits.x_test, splits.y_test, verbose=0)
    val_acc = history.history.get("val_accuracy", [None])[-1] if history else None
    return {
        "test_accuracy": float(accuracy),
        "test_loss": float(loss),
        "val_accuracy": None if val_acc is None else float(val_acc),
        "epochs": epochs,
        "train_seconds": round(time.time() - start, 2),
    }


def run_baseline(spec: StudySpec, splits: data.Splits | None = None) -> dict[str, Any]:
    """Train the seed's untuned baseline for ``spec.model`` and write baseline.json."""
    import keras

    from tuner_service.models.seed import BASELINES

    if spec.model not in BASELINES:
        raise ValueError(f"no seed baseline for model {spec.model!r} (only mlp, cnn)")
    splits = splits or data.load(spec.data, spec.seed)
    if spec.seed is not None:
        keras.utils.set_random_seed(spec.seed)
    model = BASELINES[spec.model]()
    fit = lambda m, *a, **kw: m.fit(*a, **kw)  # noqa: E731
    result = {"model": spec.model, **_fit_and_test(model, fit, splits, spec.epochs, spec)}
    spec.project_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(spec.project_dir / files.BASELINE, result)
    return result


def finalize(spec: StudySpec, tuner: keras_tuner.Tuner, outcome_state: str) -> dict[str, Any]:
    """Write results.json; with ``retrain_best`` also retrain, test and export the best model."""
    import keras

    project = spec.project_dir
    rows = trial_rows(spec)
    completed = [r for r in rows if r["status"] == "COMPLETED"]
    results: dict[str, Any] = {
        "name": spec.name,
        "model": spec.model,
        "tuner": spec.tuner.type,
        "objective": spec.objective,
        "state": outcome_state,
        "trials": rows,
        "trials_completed": len(completed),
    }
    best = tuner.oracle.get_best_trials(1) if completed else []
    if best:
        results["best_trial_id"] = best[0].trial_id
        results["best_val_score"] = best[0].score
        results["best_hyperparameters"] = dict(best[0].hyperparameters.values)
    splits = None
    if best and spec.retrain_best:
        splits = data.load(spec.data, spec.seed)
        if spec.seed is not None:
            keras.utils.set_random_seed(spec.seed)
        hp = best[0].hyperparameters
        model = tuner.hypermodel.build(hp)
        epochs = int(hp.values.get("tuner/epochs", spec.epochs))
        best_step = getattr(best[0], "best_step", None)
        if best_step is not None:
            # Retrain for as many epochs as the trial's best validation epoch (chosen on
            # validation data, never on test), not past it into over-fitting.
            epochs = max(1, min(epochs, int(best_step) + 1))
        fit = lambda m, *a, **kw: tuner.hypermodel.fit(hp, m, *a, **kw)  # noqa: E731
        final = _fit_and_test(model, fit, splits, epochs, spec)
        model.save(project / files.BEST_MODEL)
        results["test_accuracy"] = final["test_accuracy"]
        results["retrain"] = final
        results["best_model"] = str(project / files.BEST_MODEL)
    if spec.baseline and spec.is_seed_model and best:
        baseline = read_json(project / files.BASELINE) or run_baseline(spec, splits)
        results["baseline_test_accuracy"] = baseline["test_accuracy"]
    write_json_atomic(project / files.RESULTS, results)
    return results


def load_results(spec: StudySpec) -> dict[str, Any] | None:
    return read_json(spec.project_dir / files.RESULTS)
