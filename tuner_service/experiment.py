"""`tuner-service experiment`: the seed's whole protocol for one model, and its comparison table.

The protocol (SEED.md): train the hand-built baseline and test it; search the model's space with
a chief and workers (validation data only); retrain the best hyperparameters and test them; put
baseline and tuned test accuracy side by side with the seed's own numbers. The test set is used
only after the search has chosen (by the objective on validation data); :func:`selection_check`
verifies, from the search's own records, that the chosen trial is the best by validation score.

Writes ``<directory>/<name>/experiment.json`` and ``experiment.md`` (plus the search's
``results.json`` and the report). Example::

    KERAS_HOME=/work/shared/data/keras tuner-service experiment --model mlp \\
        --set max_trials=8 --set epochs=5 --set directory=/tmp/exp
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from tuner_service import fmt, objective
from tuner_service.significance import sentence
from tuner_service.spec import StudySpec
from tuner_service.stopping import study_rule
from tuner_service.study import files

# The seed's results on full Fashion-MNIST (test accuracy, %), see SEED.md.
SEED_RESULTS = {
    "mlp": {"baseline": 86.6, "tuned": 88.2, "note": "Bayesian optimization, about one hour"},
    "cnn": {"baseline": 90.8, "tuned": 92.0, "note": "Bayesian optimization, max_trials = 100"},
}


class ExperimentError(Exception):
    """The experiment cannot run as asked (bad model, results already there...)."""


def experiment_overrides(model: str, config: str | None, overrides: list[str]) -> list[str]:
    """The study overrides that make a study file (or none) run the seed's protocol."""
    out = [*overrides, f"model={model}", "baseline=true", "retrain_best=true"]
    if config is None and not any(o.startswith("name=") for o in overrides):
        out.insert(0, f"name=experiment-{model}")
    return out


def check_fresh(spec: StudySpec) -> None:
    if (spec.project_dir / files.EXPERIMENT_JSON).exists() or (spec.project_dir / files.RESULTS).exists():
        raise ExperimentError(
            f"{spec.project_dir} already holds a finished search; pick another name or directory "
            "(--set name=... / --set directory=...)"
        )


def active_hyperparameters(model: str, hps: dict[str, Any]) -> dict[str, Any]:
    """Drop the seed models' per-layer values beyond the chosen depth (keras-tuner keeps values
    for every hyperparameter in the space, used or not)."""
    depth_key, per_layer = {
        "mlp": ("n_layers", ("units_",)),
        "cnn": ("n_blocks", ("filters_", "padding_")),
    }.get(model, (None, ()))
    if depth_key is None or depth_key not in hps:
        return dict(hps)
    depth = int(hps[depth_key])
    out = {}
    for key, value in hps.items():
        prefix = next((p for p in per_layer if key.startswith(p) and key[len(p) :].isdigit()), None)
        if prefix is None or int(key[len(prefix) :]) < depth:
            out[key] = value
    return out


def seed_observations(model: str, best_hps: dict[str, Any]) -> dict[str, Any]:
    """The seed's observations (SEED.md), checked on the best hyperparameters found."""
    if model == "mlp":
        dropout = best_hps.get("dropout")
        return {
            "claim": "the tuner picks a non-zero dropout",
            "found": f"dropout = {dropout}",
            "holds": bool(dropout),
        }
    if model == "cnn":
        blocks = int(best_hps.get("n_blocks", 1))
        filters = [best_hps.get(f"filters_{i}") for i in range(blocks)]
        steps = list(zip(filters, filters[1:], strict=False))
        grows = blocks > 1 and all(a <= b for a, b in steps) and filters[-1] > filters[0]
        return {
            "claim": "the best CNN grows its filter count block after block (the space allows it)",
            "found": f"{blocks} block(s), filters {filters}",
            "holds": grows,
        }
    return {}


def _growing_filters(model: str, results: dict[str, Any]) -> list[str] | None:
    """CNN only: the trials whose filter counts grow block after block (the space allows it)."""
    if model != "cnn":
        return None
    out = []
    for row in results.get("trials", []):
        if seed_observations("cnn", active_hyperparameters("cnn", row.get("hyperparameters") or {}))["holds"]:
            out.append(row["trial_id"])
    return out


def selection_check(results: dict[str, Any]) -> dict[str, Any]:
    """Was the best trial chosen by validation score alone? (the test set never chooses)"""
    completed = [
        r
        for r in results.get("trials", [])
        if r.get("status") == "COMPLETED" and r.get("score") is not None and math.isfinite(r["score"])
    ]
    if not completed:
        return {"ok": False, "why": "no completed trial"}
    best = objective.of_results(results).best(r["score"] for r in completed)
    chosen = next((r for r in completed if r["trial_id"] == results.get("best_trial_id")), None)
    ok = chosen is not None and chosen["score"] == best
    return {
        "ok": ok,
        "chosen_by": f"{results.get('objective')} on the validation split",
        "best_trial_id": results.get("best_trial_id"),
        "best_validation_score": best,
    }


def comparison(spec: StudySpec, results: dict[str, Any], baseline: dict[str, Any] | None) -> dict[str, Any]:
    best_hps = {
        k: v for k, v in (results.get("best_hyperparameters") or {}).items() if not k.startswith("tuner/")
    }
    best_hps = active_hyperparameters(spec.model, best_hps)
    out: dict[str, Any] = {
        "name": spec.name,
        "model": spec.model,
        "tuner": spec.tuner.type,
        "max_trials": spec.max_trials,
        "epochs": spec.epochs,
        "trials_completed": results.get("trials_completed"),
        "early_stopping": rule.describe() if (rule := study_rule(spec)) else None,
        "baseline_test_accuracy": (baseline or {}).get("test_accuracy"),
        "baseline_val_accuracy": (baseline or {}).get("val_accuracy"),
        "tuned_test_accuracy": results.get("test_accuracy"),
        "tuned_val_score": results.get("best_val_score"),
        "best_hyperparameters": best_hps,
        "seed": SEED_RESULTS.get(spec.model),
        "seed_observation": seed_observations(spec.model, best_hps),
        "trials_with_growing_filters": _growing_filters(spec.model, results),
        "selection": selection_check(results),
        "tuned_test_metrics": results.get("test_metrics"),
        "baseline_test_metrics": results.get("baseline_test_metrics") or (baseline or {}).get("test_metrics"),
        # Paired test on the same test samples (tuner_service/significance.py); results.json's.
        "comparison": results.get("comparison"),
    }
    if out["baseline_test_accuracy"] is not None and out["tuned_test_accuracy"] is not None:
        out["gain_points"] = 100 * (out["tuned_test_accuracy"] - out["baseline_test_accuracy"])
    return out


def markdown(cmp: dict[str, Any], command: str | None = None) -> str:
    seed = cmp.get("seed") or {}
    lines = [
        f"# Experiment `{cmp['name']}`: {cmp['model'].upper()}, baseline vs tuned",
        "",
        f"{cmp['tuner']} search, {cmp['trials_completed']} trials completed "
        f"(max_trials {cmp['max_trials']}), "
        f"{cmp['epochs']} epochs per trial; early stopping "
        f"{'on, ' + cmp['early_stopping'] if cmp['early_stopping'] else 'off'}.",
        "",
        "| | baseline | tuned (best, retrained) | gain |",
        "|---|---|---|---|",
        f"| test accuracy, this run | {fmt.percent(cmp['baseline_test_accuracy'])} "
        f"| {fmt.percent(cmp['tuned_test_accuracy'])} "
        f"| {cmp['gain_points']:+.1f} points |"
        if "gain_points" in cmp
        else "| test accuracy, this run | - | - | - |",
        f"| validation accuracy, this run | {fmt.percent(cmp['baseline_val_accuracy'])} "
        f"| {fmt.percent(cmp['tuned_val_score'])} (best trial) | |",
    ]
    if cmp.get("comparison"):
        c = cmp["comparison"]
        lo, hi = c["ci95"]
        p = "-" if c.get("p_value") is None else f"{c['p_value']:.2g}"
        lines.append(
            f"| difference, 95 % confidence interval ({c['test']}: p = {p}) | | "
            f"{100 * lo:+.1f} to {100 * hi:+.1f} points | {c['verdict']} |"
            if c["metric"] == "accuracy"
            else f"| {c['metric']} difference, 95 % CI ({c['test']}: p = {p}) | | "
            f"{lo:+.4g} to {hi:+.4g} | {c['verdict']} |"
        )
    rep = cmp.get("repeated")
    if rep and rep["baseline"] and rep["tuned"]:
        b, t = fmt.mean_sd(rep["baseline"]), fmt.mean_sd(rep["tuned"])
        lines.append(
            f"| test accuracy, mean ± sd of {len(rep['tuned'])} retrains | {b} | {t} "
            f"| {100 * (statistics.fmean(rep['tuned']) - statistics.fmean(rep['baseline'])):+.1f} points |"
        )
    if seed:
        lines.append(
            f"| test accuracy, seed (full data) | {seed['baseline']:.1f} % | {seed['tuned']:.1f} % "
            f"| {seed['tuned'] - seed['baseline']:+.1f} points |"
        )
    lines += [
        "",
        *([f"Verdict: {sentence(cmp['comparison'], 'test images')}.", ""] if cmp.get("comparison") else []),
        "Best hyperparameters: " + ", ".join(f"`{k}={v}`" for k, v in cmp["best_hyperparameters"].items()),
    ]
    obs = cmp.get("seed_observation")
    if obs:
        lines.append(
            f"Seed observation, {obs['claim']}: {obs['found']} → "
            f"{'holds' if obs['holds'] else 'does not hold'}."
        )
    growing = cmp.get("trials_with_growing_filters")
    if growing is not None:
        lines.append(
            f"Trials whose filter counts grow block after block: {len(growing)} of {cmp['trials_completed']}"
            + (f" ({', '.join(growing)})." if growing else ".")
        )
    sel = cmp["selection"]
    lines.append(
        f"Chosen by {sel.get('chosen_by')}; the test set was used only afterwards "
        f"(check: {'best trial = best validation score' if sel['ok'] else 'FAILED: ' + str(sel)})."
    )
    if command:
        lines += ["", "Command:", "", f"    {command}"]
    return "\n".join(lines) + "\n"


def write(spec: StudySpec, cmp: dict[str, Any], command: str | None = None) -> Path:
    files.write_json_atomic(spec.project_dir / files.EXPERIMENT_JSON, cmp)
    path = spec.project_dir / files.EXPERIMENT_MD
    files.write_text_atomic(path, markdown(cmp, command))
    return path


def write_study(spec: StudySpec) -> Path:
    """The resolved study file (study file + overrides) in the project: what chief and workers run."""
    from tuner_service.spec import dump

    spec.project_dir.mkdir(parents=True, exist_ok=True)
    path = spec.project_dir / files.EXPERIMENT_STUDY
    files.write_text_atomic(path, dump(spec))
    return path


def repeated_tests(spec: StudySpec, repeats: int) -> dict[str, list[float]]:
    """Retrain the baseline and the best hyperparameters ``repeats`` times each (seeds
    ``seed``, ``seed+1``...) and test every model: one retrain is noisy on small data.

    Only the search's choice (best trial by validation score) is trained here; the test set
    scores it, it chooses nothing. The metric is accuracy (classification) or MAE (regression).
    """
    import keras
    import keras_tuner

    from tuner_service import data, training
    from tuner_service.models import load_hypermodel
    from tuner_service.models.seed import BASELINES
    from tuner_service.results import load_results

    results = load_results(spec) or {}
    best_id = results.get("best_trial_id")
    if best_id is None:
        raise ExperimentError("the search chose no trial; nothing to test")
    trial = keras_tuner.engine.trial.Trial.load(str(files.StudyDir(spec.project_dir).trial_file(best_id)))
    splits = data.load(spec.data, spec.seed, spec.batch_size)
    if splits.test is None:
        raise ExperimentError(f"data {spec.data.source!r} has no test set to retest on")
    hypermodel = load_hypermodel(spec.model, splits.task)
    metric = "accuracy" if splits.task.is_classification else "mae"
    out: dict[str, list[float]] = {"baseline": [], "tuned": []}
    for i in range(repeats):
        for kind in ("baseline", "tuned"):
            keras.utils.set_random_seed((spec.seed or 0) + i)
            if kind == "baseline":
                model = BASELINES[spec.model](splits.task)
                fit = lambda m, *a, **kw: m.fit(*a, **kw)  # noqa: E731
            else:
                hp = trial.hyperparameters
                model = hypermodel.build(hp)
                fit = lambda m, *a, hp=hp, **kw: hypermodel.fit(hp, m, *a, **kw)  # noqa: E731
            _, evaluation = training.fit_and_test(
                fit, model, splits, epochs=spec.epochs, batch_size=spec.batch_size, objective=spec.objective
            )
            assert evaluation is not None
            out[kind].append(evaluation.metrics[metric])
    return out


def finish(spec: StudySpec, command: str | None = None, repeats: int = 0) -> dict[str, Any]:
    """After the search (chief finalized results.json): build, write and return the comparison."""
    from tuner_service.results import load_results

    results = load_results(spec)
    if results is None:
        raise ExperimentError(f"the search left no results at {spec.project_dir / files.RESULTS}")
    cmp = comparison(spec, results, files.read_json(spec.project_dir / files.BASELINE))
    if repeats > 0:
        cmp["repeated"] = repeated_tests(spec, repeats)
    write(spec, cmp, command)
    return cmp


def run(spec: StudySpec, command: str, *, workers: int, repeats: int, show_progress: bool = True) -> int:
    """``tuner-service experiment``: baseline, search, retrain and test, comparison, report."""
    from tuner_service.local import run_search
    from tuner_service.report import write_report
    from tuner_service.results import run_baseline

    check_fresh(spec)
    print(f"[1/3] baseline {spec.model}: train and test the hand-built model", flush=True)
    run_baseline(spec)
    print("[2/3] search (validation data only), then retrain the best and test it", flush=True)
    # Chief and workers read one study file; the resolved one is also the experiment's record.
    study = write_study(spec)
    code = run_search(spec, str(study), [], workers=workers, show_progress=show_progress)
    if code != 0:
        return code
    print(f"[3/3] comparison ({repeats} more retrains of each) and report", flush=True)
    cmp = finish(spec, command, repeats=repeats)
    write_report(spec)
    print(markdown(cmp))
    print(f"written: {spec.project_dir / files.EXPERIMENT_MD}, {spec.project_dir / files.REPORT_HTML}")
    return 0
