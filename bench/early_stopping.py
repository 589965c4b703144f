"""Measure early stopping: epochs and wall time saved vs best validation accuracy lost.

For each tuner (random search, Bayesian optimization) and each seed, the same search runs twice,
early stopping off and on, through the real chief (its gRPC server and servicer, in threads)
and one real worker (``tuner_service.worker.Worker``'s tuner, in this process), on the shared
Fashion-MNIST sample. Every trial's Keras seed is fixed from (seed, trial id), so with random
search both runs train the very same trials and a difference comes from stopping alone.

Goal (issue 7): at least 30 % fewer epochs for at most 0.2 points of best validation accuracy.

Run (about 30 minutes on 2 shared cores for both tuners, 6 seeds, 20 trials x 10 epochs)::

    KERAS_HOME=/work/shared/data/keras nice python bench/early_stopping.py --out /tmp/es.json

It prints a Markdown table (docs/bench/early_stopping.md); ``--out`` also writes every run's
numbers, learning curves included, as JSON. ``--variant none`` runs only the searches without
stopping; ``--replay FILE...`` then applies any variants to those recorded random searches in
seconds (see :func:`replay`). Results and their reading: docs/results.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The study file's defaults (early_stopping: median); add others with --variant.
DEFAULT_VARIANTS = ("median",)
CONTRACT = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")


def parse_variant(text: str) -> dict[str, Any]:
    """``median:min_epochs=2:min_trials=3`` -> the study's ``early_stopping`` settings."""
    rule, *pairs = text.split(":")
    settings: dict[str, Any] = {"rule": rule}
    for pair in pairs:
        key, _, value = pair.partition("=")
        settings[key] = int(value)
    return settings


def study(
    args: argparse.Namespace,
    tuner: str,
    seed: int,
    stopping: dict[str, Any] | None,
    directory: str,
    label: str,
) -> Any:
    from tuner_service import spec as spec_module

    overrides = [
        f"name={tuner}-{seed}-{label}",
        f"model={args.model}",
        f"tuner.type={tuner}",
        f"max_trials={args.max_trials}",
        f"epochs={args.epochs}",
        f"batch_size={args.batch_size}",
        f"seed={seed}",
        f"directory={directory}",
        "baseline=false",
        "retrain_best=false",
    ]
    if tuner == "bayesian":
        overrides.append(f"tuner.num_initial_points={args.initial_points}")
    for key, value in (stopping or {}).items():
        overrides.append(f"early_stopping.{key}={value}")
    return spec_module.load(None, overrides)


def run_search(spec: Any, splits: Any) -> dict[str, Any]:
    """One search: a real Chief in threads, one real worker tuner in this process."""
    import keras

    from tuner_service import training
    from tuner_service.chief.chief import Chief
    from tuner_service.models import load_hypermodel
    from tuner_service.process import Role
    from tuner_service.tuners import build_tuner
    from tuner_service.worker import Worker

    for var in CONTRACT:
        os.environ.pop(var, None)
    chief_tuner = build_tuner(spec, load_hypermodel(spec.model, splits.task))
    chief_tuner.save()
    chief = Chief(spec, chief_tuner.oracle, address="127.0.0.1:0", linger=1.0)
    start, cpu_start = time.perf_counter(), time.process_time()
    chief.start()
    outcome: dict[str, Any] = {}
    waiter = threading.Thread(target=lambda: outcome.update(o=chief.wait()), daemon=True)
    waiter.start()

    worker_tuner = Worker(spec, Role("worker-0", "127.0.0.1", chief.port)).build_tuner(splits.task)
    epochs_trained: dict[str, int] = {}
    curves: dict[str, list[float]] = {}  # trial id -> objective per epoch, for --replay
    # Wall time of epochs 2, 3...: the steady cost of one epoch, without the first epoch's
    # one-off work (building, tracing the training function).
    last_epoch_end: dict[str, float] = {}
    later_epochs: list[float] = []

    def count(trial: Any, epoch: int, logs: dict) -> None:
        now = time.perf_counter()
        if trial.trial_id in last_epoch_end:
            later_epochs.append(now - last_epoch_end[trial.trial_id])
        last_epoch_end[trial.trial_id] = now
        epochs_trained[trial.trial_id] = epoch + 1
        curves.setdefault(trial.trial_id, []).append(float(logs.get(spec.objective, math.nan)))

    worker_tuner.epoch_hooks.insert(0, count)
    begin = worker_tuner.on_trial_begin

    def seeded_begin(trial: Any) -> None:
        # Same seed for the same trial in both runs: differences come from stopping only.
        keras.utils.set_random_seed(spec.seed * 1000 + int(trial.trial_id))
        begin(trial)

    worker_tuner.on_trial_begin = seeded_begin
    with contextlib.redirect_stdout(io.StringIO()):  # keras-tuner's per-trial display
        fit_args, fit_kwargs = training.search_inputs(splits, spec.batch_size)  # as the workers do
        worker_tuner.search(*fit_args, epochs=spec.epochs, verbose=0, **fit_kwargs)
    waiter.join(60)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    chief.shutdown(outcome.get("o") or chief.wait())
    worker_tuner.oracle.close()
    for var in CONTRACT:
        os.environ.pop(var, None)

    oracle = chief.oracle
    trials = sorted(oracle.trials.values(), key=lambda t: int(t.trial_id))
    best = oracle.get_best_trials(1)[0]
    stopped = chief.stopping.stopped if chief.stopping else {}
    return {
        "wall_seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),
        "steady_epoch_seconds": round(statistics.median(later_epochs), 4) if later_epochs else None,
        "epochs": sum(epochs_trained.values()),
        "best_val_accuracy": float(best.score),
        "best_trial": best.trial_id,
        "trials_stopped": len(stopped),
        "trials": [
            {
                "id": t.trial_id,
                "score": None if t.score is None else round(float(t.score), 4),
                "epochs": epochs_trained.get(t.trial_id),
                "stopped": t.trial_id in stopped,
                "curve": [round(v, 5) for v in curves.get(t.trial_id, [])],
            }
            for t in trials
        ],
    }


def replay(off: dict[str, Any], settings: dict[str, Any], epochs: int) -> dict[str, Any]:
    """What a rule would have done to a search that ran without stopping.

    Exact for random search with one worker, the setting of this benchmark: the trials are the
    same with and without stopping (same hyperparameters, seeded weights, same order), so a
    stopped trial's curve is the full curve cut where the rule stops it. The rule is the chief's
    own :class:`~tuner_service.stopping.EarlyStopping`, fed the recorded reports in order.
    Not valid for Bayesian optimization, whose later trials depend on the scores of earlier ones.
    """
    from tuner_service.stopping import EarlyStopping, make_rule

    rule = make_rule(settings["rule"], **{k: v for k, v in settings.items() if k != "rule"})
    stopping = EarlyStopping(rule, "max", max_epochs=epochs)
    trials = []
    for t in off["trials"]:
        curve = t["curve"]
        kept = len(curve)
        for step, value in enumerate(curve):
            if stopping.report(t["id"], step, value):
                kept = step + 1
                break
        stopping.trial_ended(t["id"])
        trials.append({"id": t["id"], "score": max(curve[:kept]), "epochs": kept, "curve": curve[:kept]})
    best = max(trials, key=lambda t: t["score"])
    return {
        "wall_seconds": None,
        "cpu_seconds": None,
        "steady_epoch_seconds": None,
        "epochs": sum(t["epochs"] for t in trials),
        "best_val_accuracy": best["score"],
        "best_trial": best["id"],
        "trials_stopped": len(stopping.stopped),
        "trials": trials,
    }


def _seconds(off: dict[str, Any], on: dict[str, Any], key: str) -> str:
    return "–" if on[key] is None else f"{off[key]:.0f} → {on[key]:.0f}"


def _saved(pairs: list[tuple[dict, dict]], key: str) -> str:
    if any(on[key] is None for _, on in pairs):
        return "–"
    return f"{statistics.fmean(1 - on[key] / off[key] for off, on in pairs):.0%}"


def summarise(runs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"model {args.model}, {args.max_trials} trials x {args.epochs} epochs, batch {args.batch_size}, "
        f"seeds {args.seeds}; every variant is compared with the same seed's search without stopping",
        "",
        "| tuner | early stopping | seed | epochs off → on | saved | CPU s off → on | wall s off → on "
        "| best val acc off → on | Δ points | stopped |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str], list[tuple[dict, dict]]] = {}
    for r in runs:
        off = r["off"]
        for label, on in r["on"].items():
            groups.setdefault((r["tuner"], label), []).append((off, on))
            lines.append(
                f"| {r['tuner']} | {label} | {r['seed']} | {off['epochs']} → {on['epochs']} "
                f"| {1 - on['epochs'] / off['epochs']:.0%} "
                f"| {_seconds(off, on, 'cpu_seconds')} | {_seconds(off, on, 'wall_seconds')} "
                f"| {off['best_val_accuracy']:.4f} → {on['best_val_accuracy']:.4f} "
                f"| {100 * (on['best_val_accuracy'] - off['best_val_accuracy']):+.2f} "
                f"| {on['trials_stopped']}/{len(on['trials'])} |"
            )
    lines += [
        "",
        "| tuner | early stopping | epochs saved (mean) | CPU time saved | wall time saved "
        "| best val acc Δ, points (mean) | worst Δ | goal met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (tuner, label), pairs in groups.items():
        saved = statistics.fmean(1 - on["epochs"] / off["epochs"] for off, on in pairs)
        deltas = [100 * (on["best_val_accuracy"] - off["best_val_accuracy"]) for off, on in pairs]
        met = saved >= 0.30 and statistics.fmean(deltas) >= -0.2
        lines.append(
            f"| {tuner} | {label} | {saved:.0%} | {_saved(pairs, 'cpu_seconds')} "
            f"| {_saved(pairs, 'wall_seconds')} | {statistics.fmean(deltas):+.2f} "
            f"| {min(deltas):+.2f} | {'yes' if met else 'no'} |"
        )
    steady = [
        run["steady_epoch_seconds"]
        for r in runs
        for run in [r["off"], *r["on"].values()]
        if run.get("steady_epoch_seconds")
    ]
    offs = [r["off"] for r in runs]
    if steady and offs:
        epoch_s = statistics.median(steady)
        per_search = statistics.fmean(o["wall_seconds"] for o in offs)
        epochs = statistics.fmean(o["epochs"] for o in offs)
        lines += [
            "",
            f"Time split of a search without stopping (mean wall {per_search:.0f} s): "
            f"{epochs:.0f} epochs x {epoch_s:.3f} s (median steady epoch) = {epochs * epoch_s:.0f} s "
            f"in epochs after the first of each trial's; the rest is per-trial work that early "
            "stopping cannot save (building and tracing the model, its first epoch, bookkeeping).",
        ]
    return "\n".join(lines)


def replay_file(args: argparse.Namespace) -> int:
    try:
        files = [json.loads(path.read_text()) for path in args.replay]
        settings = files[0]["settings"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"--replay: cannot read a recorded run ({exc})", file=sys.stderr)
        return 2
    if any(f["settings"]["epochs"] != settings["epochs"] for f in files):
        print("--replay: the files were recorded with different epochs per trial", file=sys.stderr)
        return 2
    runs = []
    for r in (r for f in files for r in f["runs"]):
        if r["tuner"] != "random" or not all(t.get("curve") for t in r["off"]["trials"]):
            continue
        on = {v: replay(r["off"], parse_variant(v), settings["epochs"]) for v in args.variant}
        # The best score as the curves give it (rounded like them), so "no loss" reads 0.00.
        off = r["off"] | {"best_val_accuracy": max(max(t["curve"]) for t in r["off"]["trials"])}
        runs.append({"tuner": "random", "seed": r["seed"], "off": off, "on": on})
    if not runs:
        print("--replay: no random search with per-epoch curves in these files", file=sys.stderr)
        return 2
    for key in ("model", "max_trials", "epochs", "batch_size"):
        setattr(args, key, settings[key])
    args.seeds = [r["seed"] for r in runs]
    names = " ".join(str(p) for p in args.replay)
    print(f"Replayed from {names} (no training; exact for random search, see replay())\n")
    print(summarise(runs, args))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mlp", choices=["mlp", "cnn"])
    p.add_argument("--tuners", nargs="+", default=["random", "bayesian"], choices=["random", "bayesian"])
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5, 6])
    p.add_argument("--max-trials", type=int, default=20)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--initial-points", type=int, default=4, help="Bayesian: random trials first")
    p.add_argument(
        "--variant",
        action="append",
        help="early-stopping settings to compare, RULE[:KEY=INT...], repeatable "
        f"(default: {' '.join(DEFAULT_VARIANTS)})",
    )
    p.add_argument("--out", type=Path, help="write every run's numbers here (JSON)")
    p.add_argument(
        "--replay",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="train nothing: apply the variants to the random searches without stopping "
        "recorded in JSON (an earlier --out), in seconds instead of minutes",
    )
    args = p.parse_args(argv)
    args.variant = args.variant or list(DEFAULT_VARIANTS)
    if args.variant == ["none"]:  # searches without stopping only: curves for --replay
        args.variant = []
    if args.replay:
        return replay_file(args)
    if not os.environ.get("KERAS_HOME"):
        print(
            "set KERAS_HOME (e.g. /work/shared/data/keras) so the Fashion-MNIST sample loads", file=sys.stderr
        )
        return 2

    import logging

    logging.basicConfig(level=logging.WARNING)
    from tuner_service import data

    runs = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-es-") as tmp:
        for tuner in args.tuners:
            for seed in args.seeds:
                row: dict[str, Any] = {"tuner": tuner, "seed": seed, "on": {}}
                for index, label in enumerate(["off", *args.variant]):
                    stopping = None if label == "off" else parse_variant(label)
                    spec = study(args, tuner, seed, stopping, tmp, f"v{index}")
                    splits = data.load(spec.data, spec.seed, spec.batch_size)
                    result = run_search(spec, splits)
                    if stopping is None:
                        row["off"] = result
                    else:
                        row["on"][label] = result
                    print(
                        f"{tuner} seed {seed} {label}: {result['epochs']} epochs, "
                        f"{result['wall_seconds']:.0f}s wall, {result['cpu_seconds']:.0f}s CPU, "
                        f"best {result['best_val_accuracy']:.4f}",
                        file=sys.stderr,
                        flush=True,
                    )
                runs.append(row)
    table = summarise(runs, args)
    print(table)
    print(f"\ntotal {time.perf_counter() - started:.0f}s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps({"settings": vars(args) | {"out": str(args.out)}, "runs": runs}, indent=1)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
