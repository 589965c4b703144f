"""After a search: retrain the best hyperparameters, test them, write results.json.

Test data is used only here, after the search has chosen: never for choosing. The keys of
``results.json`` are listed in docs/results.md ("results.json"); readers (``results``, the
report, ``experiment``) rely on them. :func:`current` also answers for a search that is still
running, was interrupted or failed: what completed, built from the trial files and the ledger,
marked ``partial``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner_service import objective
from tuner_service.spec import StudySpec
from tuner_service.study import files
from tuner_service.study.files import read_json, write_json_atomic
from tuner_service.study.ledger import read_snapshot

if TYPE_CHECKING:
    import keras_tuner

    from tuner_service import data
    from tuner_service.training import Evaluation

log = logging.getLogger(__name__)


def _trial_json(path: Path) -> dict[str, Any] | None:
    """A keras-tuner ``trial.json`` read as JSON (no TensorFlow needed to list trials)."""
    raw = read_json(path)
    return raw if isinstance(raw, dict) and "trial_id" in raw else None


def trial_rows(spec: StudySpec) -> list[dict[str, Any]]:
    """One row per trial, from keras-tuner's trial files and the chief's ledger."""
    project = spec.project_dir
    ledger = (read_snapshot(project) or {}).get("trials", {})
    rows = []
    for path in files.StudyDir(project).trial_files():
        trial = _trial_json(path)
        if trial is None:
            continue
        extra = ledger.get(trial["trial_id"], {})
        message = trial.get("message") or ""
        rows.append(
            {
                "trial_id": trial["trial_id"],
                "status": trial.get("status"),
                "score": trial.get("score"),
                "tuner_id": extra.get("tuner_id"),
                "duration": extra.get("duration"),
                "epochs": extra.get("epochs"),
                "hyperparameters": dict((trial.get("hyperparameters") or {}).get("values") or {}),
                "message": message.strip().splitlines()[-1:] or None,
            }
        )
    return rows


def wall_seconds(snapshot: dict[str, Any] | None) -> float | None:
    """Search start to end from the ledger: first trial started to last trial ended (while the
    search runs: to the ledger's last update)."""
    if not snapshot:
        return None
    trials = list(snapshot.get("trials", {}).values())
    starts = [t["started_at"] for t in trials if t.get("started_at") is not None]
    ends = [t["ended_at"] for t in trials if t.get("ended_at") is not None]
    end = max(ends) if ends and snapshot.get("state") != "running" else snapshot.get("updated_at")
    return None if not starts or end is None else round(max(0.0, end - min(starts)), 1)


def _head(spec: StudySpec, rows: list[dict[str, Any]], state: str, direction: str) -> dict[str, Any]:
    completed = [r for r in rows if r["status"] == "COMPLETED"]
    return {
        "name": spec.name,
        "model": spec.model,
        "tuner": spec.tuner.type,
        "objective": spec.objective,
        "objective_direction": direction,
        "data_source": spec.data.source,
        "state": state,
        "partial": state != "finished",
        "trials": rows,
        "trials_completed": len(completed),
        "wall_seconds": wall_seconds(read_snapshot(spec.project_dir)),
    }


def run_baseline(spec: StudySpec, splits: data.Splits | None = None) -> dict[str, Any]:
    """Train the seed's untuned baseline for ``spec.model`` and write baseline.json."""
    import keras

    from tuner_service import data, training
    from tuner_service.models.seed import BASELINES

    if spec.model not in BASELINES:
        raise ValueError(f"no seed baseline for model {spec.model!r} (only mlp, cnn)")
    splits = splits or data.load(spec.data, spec.seed, spec.batch_size)
    if spec.seed is not None:
        keras.utils.set_random_seed(spec.seed)
    model = BASELINES[spec.model](splits.task)
    record, evaluation = training.fit_and_test(
        lambda m, *a, **kw: m.fit(*a, **kw),
        model,
        splits,
        epochs=spec.epochs,
        batch_size=spec.batch_size,
        objective=spec.objective,
    )
    result = {"model": spec.model, "data_source": spec.data.source, **record, **_per_sample(evaluation)}
    spec.project_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(spec.project_dir / files.BASELINE, result)
    return result


def _per_sample(evaluation: Evaluation | None) -> dict[str, Any]:
    """Per-test-sample results kept in baseline.json, so a later search can pair with them."""
    from tuner_service import significance

    if evaluation is None:
        return {}
    if evaluation.correct is not None:
        return {"test_correct": significance.encode(evaluation.correct)}
    return {
        "test_errors": [
            round(float(e), 6) for e in (evaluation.errors if evaluation.errors is not None else [])
        ]
    }


def compare(
    baseline: dict[str, Any], tuned: Evaluation, metric_direction: str = "min"
) -> dict[str, Any] | None:
    """Baseline vs tuned on the same test samples (tuner_service/significance.py); None if unpaired
    data of another size."""
    from tuner_service import significance

    if tuned.correct is not None:
        if "test_correct" in baseline and len(baseline["test_correct"]) == tuned.size:
            return significance.paired_classification(
                significance.decode(baseline["test_correct"]), tuned.correct
            )
        acc = baseline.get("test_accuracy")
        if acc is not None and baseline.get("test_size") in (None, tuned.size):
            return significance.unpaired_accuracy(acc, float(tuned.correct.mean()), tuned.size)
        return None
    errors = baseline.get("test_errors")
    if tuned.errors is not None and errors is not None and len(errors) == tuned.size:
        return significance.paired_regression(errors, tuned.errors)
    return None


def finalize(
    spec: StudySpec, tuner: keras_tuner.Tuner, outcome_state: str, splits: data.Splits | None = None
) -> dict[str, Any]:
    """Write results.json; with ``retrain_best`` also retrain, test and export the best model."""
    import keras

    from tuner_service import data, training

    project = spec.project_dir
    rows = trial_rows(spec)
    results = _head(spec, rows, outcome_state, tuner.oracle.objective.direction)
    best = tuner.oracle.get_best_trials(1) if results["trials_completed"] else []
    if best:
        results["best_trial_id"] = best[0].trial_id
        results["best_val_score"] = best[0].score
        results["best_hyperparameters"] = dict(best[0].hyperparameters.values)
    evaluation = None
    if best and spec.retrain_best:
        splits = splits or data.load(spec.data, spec.seed, spec.batch_size)
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
        final, evaluation = training.fit_and_test(
            lambda m, *a, **kw: tuner.hypermodel.fit(hp, m, *a, **kw),
            model,
            splits,
            epochs=epochs,
            batch_size=spec.batch_size,
            objective=spec.objective,
        )
        model.save(project / files.BEST_MODEL)
        results["retrain"] = final
        results["best_model"] = str(project / files.BEST_MODEL)
        if "test_metrics" in final:
            results["test_metrics"] = final["test_metrics"]
        if "test_accuracy" in final:
            results["test_accuracy"] = final["test_accuracy"]
    if spec.baseline and spec.is_seed_model and best:
        baseline = read_json(project / files.BASELINE)
        if baseline is None or baseline.get("data_source", spec.data.source) != spec.data.source:
            baseline = run_baseline(spec, splits)
        if "test_accuracy" in baseline:
            results["baseline_test_accuracy"] = baseline["test_accuracy"]
        if "test_metrics" in baseline:
            results["baseline_test_metrics"] = baseline["test_metrics"]
        if evaluation is not None:
            cmp = compare(baseline, evaluation)
            if cmp is not None:
                results["comparison"] = cmp
    write_json_atomic(project / files.RESULTS, results)
    return results


def load_results(spec: StudySpec) -> dict[str, Any] | None:
    return read_json(spec.project_dir / files.RESULTS)


def partial_results(spec: StudySpec, snapshot: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a search that has not finished has completed (None if it has not started)."""
    rows = trial_rows(spec)
    if not rows and snapshot is None:
        return None
    state = (snapshot or {}).get("state") or "not started"
    if state == "finished":
        state = "finished, not finalized"  # the chief stopped before it wrote results.json
    direction = objective.direction_of(spec)
    results = _head(spec, rows, state, direction)
    results["partial"] = True
    completed = [r for r in rows if r["status"] == "COMPLETED" and r.get("score") is not None]
    best_id = (snapshot or {}).get("best_trial_id")
    best = next((r for r in completed if r["trial_id"] == best_id), None)
    if best is None and completed:
        pick = max if direction == "max" else min
        best = pick(completed, key=lambda r: r["score"])
    if best is not None:
        results["best_trial_id"] = best["trial_id"]
        results["best_val_score"] = best["score"]
        results["best_hyperparameters"] = best["hyperparameters"]
    return results


def current(spec: StudySpec) -> dict[str, Any] | None:
    """The results to show now: results.json of a finished search, else what has completed.

    A results.json older than the running search (the study was started again) is not the
    current one: the trial files and the ledger are.
    """
    saved = load_results(spec)
    snapshot = read_snapshot(spec.project_dir)
    running = snapshot is not None and snapshot.get("state") in ("running", "interrupted")
    if saved is not None and not running:
        saved.setdefault("partial", saved.get("state") != "finished")
        return saved
    return partial_results(spec, snapshot)
