"""Stock keras-tuner Bayesian optimization vs ours, side by side, in one run (oracle level).

    python -m bench.oracle_bench            # the full run documented in docs/oracle.md
    python -m bench.oracle_bench --quick    # CI smoke of the harness, < 60 s

Oracles are driven in-process exactly as the chief drives them (``create_trial`` ->
``update_trial`` -> ``end_trial``), with storage attached as ``keras_tuner.Tuner`` attaches it, so
the timings include keras-tuner's own bookkeeping (trial and oracle JSON files). Objectives are the
synthetic ones of ``bench/spaces.py``; the exact optimum is known, so regret is exact.

Three parts:

* **Decision latency.** Each oracle runs the sequential loop on the MLP space to 110 trials
  (same seed, default ``num_initial_points``); every ``create_trial`` and ``end_trial`` is
  timed. "At N" means the decisions taken with N..N+9 completed trials, pooled with the same
  window of the regret runs (where they reach it).
* **Regret.** Per problem and seed, the same trial budget for every oracle; regret is the
  objective's optimum minus the true (noiseless) value of the trial with the best observed score
  (what ``get_best_trials()`` returns). For the same seed both BO oracles start from the same
  random trials (keras-tuner's seeded sampler), so the comparison is paired. Random search is
  shown for scale.
* **Parallel duplicates.** Four workers: four trials always pending; whenever the oldest
  completes, its worker asks for a new one. Every proposal is checked against what already
  exists: an exact duplicate (same values), the same model (equal on the hyperparameters the
  model uses) and a near duplicate of a *pending* trial (at most one model hyperparameter apart).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras_tuner  # noqa: E402
import numpy as np  # noqa: E402

from bench.spaces import PROBLEMS, Problem  # noqa: E402
from tuner_service.compat import attach_project_dir  # noqa: E402
from tuner_service.oracles import FastBayesianOptimizationOracle  # noqa: E402

OBJECTIVE = keras_tuner.Objective("score", "max")
CHECKPOINTS = (25, 50, 100)


def _stock(**kw):
    return keras_tuner.oracles.BayesianOptimizationOracle(**kw)


def _ours(**kw):
    return FastBayesianOptimizationOracle(**kw)


def _random(**kw):
    kw = {k: v for k, v in kw.items() if k not in ("num_initial_points", "alpha", "beta")}
    return keras_tuner.oracles.RandomSearchOracle(**kw)


MAKERS: dict[str, Callable] = {"stock": _stock, "ours": _ours, "random": _random}


@dataclass
class Run:
    """What one oracle did on one problem and seed."""

    create_s: list[tuple[int, float]] = field(default_factory=list)  # (completed, seconds)
    end_s: list[tuple[int, float]] = field(default_factory=list)
    best_true: float = float("-inf")
    regret: float = float("nan")
    repeats: int = 0  # proposals identical to an earlier trial
    same_model: int = 0  # proposals that build a model already built
    near_pending: int = 0  # proposals at most one model hyperparameter from a pending trial
    proposals: int = 0


def make_oracle(
    kind: str,
    problem: Problem,
    seed: int,
    max_trials: int,
    workdir: str,
    num_initial_points: int | None = None,
):
    oracle = MAKERS[kind](
        objective=OBJECTIVE,
        max_trials=max_trials,
        hyperparameters=problem.make_space(),
        seed=seed,
        num_initial_points=num_initial_points,
    )
    attach_project_dir(oracle, tempfile.mkdtemp(dir=workdir), f"{kind}-{problem.name}-{seed}")
    oracle.verbose = 0
    return oracle


def drive(
    kind: str,
    problem: Problem,
    seed: int,
    budget: int,
    noise: float,
    workers: int,
    workdir: str,
    count_from: int = 0,
    num_initial_points: int | None = None,
) -> Run:
    """Runs ``budget`` trials with ``workers`` trials kept pending, the oldest finishing first.

    Proposals made with fewer than ``count_from`` completed trials are not counted in the
    duplicate statistics (set it to the random start's length to judge the model's proposals).
    """
    oracle = make_oracle(kind, problem, seed, budget, workdir, num_initial_points)
    run = Run()
    pending: list = []  # (tuner_id, trial), oldest first
    seen_values: list[dict] = []
    seen_models: set = set()
    best_observed = float("-inf")
    evaluations = 0

    def completed() -> int:
        return sum(t.status == "COMPLETED" for t in oracle.trials.values())

    def ask(tuner_id: str) -> bool:
        n = completed()
        t0 = time.perf_counter()
        trial = oracle.create_trial(tuner_id)
        run.create_s.append((n, time.perf_counter() - t0))
        if trial.status != "RUNNING":
            return False
        values = dict(trial.hyperparameters.values)
        key = problem.model_key(values)
        if n >= count_from:
            run.proposals += 1
            run.repeats += values in seen_values
            run.same_model += key in seen_models
            run.near_pending += any(
                problem.model_distance(values, t.hyperparameters.values) <= 1 for _, t in pending
            )
        seen_values.append(values)
        seen_models.add(key)
        pending.append((tuner_id, trial))
        return True

    def finish() -> str:
        nonlocal best_observed, evaluations
        tuner_id, trial = pending.pop(0)
        values = trial.hyperparameters.values
        score = problem.noisy(values, seed, evaluations, noise)
        evaluations += 1
        oracle.update_trial(trial.trial_id, {"score": score})
        trial.status = "COMPLETED"
        n = completed()
        t0 = time.perf_counter()
        oracle.end_trial(trial)
        run.end_s.append((n, time.perf_counter() - t0))
        if score > best_observed:
            best_observed = score
            run.best_true = problem.objective(values)
        return tuner_id

    for w in range(workers):
        if not ask(f"worker-{w}"):
            break
    while pending:
        tuner_id = finish()
        ask(tuner_id)
    run.regret = problem.optimum - run.best_true
    return run


def latency_run(kind: str, per_window: int, workdir: str) -> Run:
    """Times ``per_window`` model-based decisions at each checkpoint of one MLP search.

    Between checkpoints the history is filled by the oracle's own random sampler (the public
    ``num_initial_points`` set out of reach), which costs stock and ours the same and keeps
    stock's part of the benchmark within minutes. At a checkpoint N the default is restored and
    the next ``per_window`` create/end cycles are timed, so they are taken with N..N+per_window-1
    completed trials; samples are recorded as ``(N, seconds)``. The first timed decision after a
    fill includes our full model refit (it lands in our p99).
    """
    problem = PROBLEMS["mlp"]
    oracle = make_oracle(kind, problem, 0, max(CHECKPOINTS) + per_window + 1, workdir)
    run = Run()
    evaluations = 0

    def cycle(checkpoint: int | None) -> None:
        nonlocal evaluations
        t0 = time.perf_counter()
        trial = oracle.create_trial("worker-0")
        t1 = time.perf_counter()
        oracle.update_trial(
            trial.trial_id, {"score": problem.noisy(trial.hyperparameters.values, 0, evaluations, 0)}
        )
        evaluations += 1
        trial.status = "COMPLETED"
        t2 = time.perf_counter()
        oracle.end_trial(trial)
        t3 = time.perf_counter()
        if checkpoint is not None:
            run.create_s.append((checkpoint, t1 - t0))
            run.end_s.append((checkpoint, t3 - t2))

    for checkpoint in CHECKPOINTS:
        oracle.num_initial_points = 10**9
        while sum(t.status == "COMPLETED" for t in oracle.trials.values()) < checkpoint:
            cycle(None)
        oracle.num_initial_points = None
        for _ in range(per_window):
            cycle(checkpoint)
    return run


# --- reporting --------------------------------------------------------------------------------


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000.0, q)) if xs else float("nan")


def _at(samples: list[tuple[int, float]], checkpoint: int) -> list[float]:
    return [s for c, s in samples if c == checkpoint]


def _fmt_ms(x: float) -> str:
    if x != x:  # nan
        return "-"
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def _ratio(stock: float, ours: float) -> str:
    r = stock / ours
    return f"{r:,.0f}x" if r >= 10 else f"{r:.2g}x"


def latency_table(runs: dict[str, list[Run]]) -> list[str]:
    lines = [
        "| completed | call | stock p50 | stock p99 | ours p50 | ours p99 | p50 ratio | p99 ratio |"
        " samples (stock/ours) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    out = {}
    for n in CHECKPOINTS:
        for call in ("create", "end"):
            row = {}
            for kind in ("stock", "ours"):
                xs = [s for r in runs[kind] for s in _at(getattr(r, f"{call}_s"), n)]
                row[kind] = (_pct(xs, 50), _pct(xs, 99), len(xs))
            (sp50, sp99, sn), (op50, op99, on) = row["stock"], row["ours"]
            out[(n, call)] = row
            lines.append(
                f"| {n} | {'CreateTrial' if call == 'create' else 'EndTrial'} | {_fmt_ms(sp50)} ms"
                f" | {_fmt_ms(sp99)} ms | {_fmt_ms(op50)} ms | {_fmt_ms(op99)} ms"
                f" | {_ratio(sp50, op50)} | {_ratio(sp99, op99)} | {sn}/{on} |"
            )
    return lines


def _mean_sd(xs: list[float]) -> str:
    if not xs:
        return "-"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{np.mean(xs) * 100:.2f} ± {sd * 100:.2f}"


def regret_table(results: dict[str, dict[str, list[Run]]]) -> list[str]:
    lines = [
        "| problem | oracle | regret, points (mean ± sd) | min | max | ours better/tie/worse"
        " | repeated proposals | same-model proposals | decision time, s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, by_kind in results.items():
        for kind, runs in by_kind.items():
            regrets = [r.regret for r in runs]
            paired = "-"
            if kind == "ours" and "stock" in by_kind:
                diffs = [o.regret - s.regret for o, s in zip(runs, by_kind["stock"], strict=True)]
                better = sum(d < -1e-12 for d in diffs)
                worse = sum(d > 1e-12 for d in diffs)
                paired = f"{better}/{len(diffs) - better - worse}/{worse}"
            total_s = sum(s for r in runs for _, s in r.create_s)
            lines.append(
                f"| {name} | {kind} | {_mean_sd(regrets)} | {min(regrets) * 100:.2f}"
                f" | {max(regrets) * 100:.2f} | {paired} | {sum(r.repeats for r in runs)}"
                f" | {sum(r.same_model for r in runs)} | {total_s:.1f} |"
            )
    return lines


def parallel_table(results: dict[str, list[Run]], workers: int) -> list[str]:
    lines = [
        f"| oracle | model-phase proposals ({workers - 1} others pending) | exact repeats"
        " | same model as an earlier trial | near duplicate of a pending trial (≤1 hp apart) |",
        "|---|---|---|---|---|",
    ]
    for kind, runs in results.items():
        lines.append(
            f"| {kind} | {sum(r.proposals for r in runs)} | {sum(r.repeats for r in runs)}"
            f" | {sum(r.same_model for r in runs)} | {sum(r.near_pending for r in runs)} |"
        )
    return lines


def machine_facts() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, numpy {np.__version__}, "
        f"keras-tuner {keras_tuner.__version__}, load average at start {load[0]:.2f}"
    )


# --- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke: tiny budgets, < 60 s")
    parser.add_argument("--seeds", type=int, default=5, help="regret seeds per problem")
    parser.add_argument("--budget", type=int, default=30, help="trials per regret run")
    parser.add_argument(
        "--initial",
        type=int,
        default=10,
        help="num_initial_points for both BO oracles in the regret and parallel runs",
    )
    parser.add_argument("--stock-samples", type=int, default=4, help="timed decisions/checkpoint")
    parser.add_argument("--ours-samples", type=int, default=20, help="timed decisions/checkpoint")
    parser.add_argument("--parallel-seeds", type=int, default=2)
    parser.add_argument("--parallel-budget", type=int, default=26)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--noise", type=float, default=0.0, help="sd of the objective's noise")
    parser.add_argument(
        "--parts",
        default="regret,latency,parallel",
        help="comma-separated subset of regret,latency,parallel (latency reuses regret's runs)",
    )
    parser.add_argument("--json", help="also write the raw results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.budget, args.stock_samples, args.ours_samples = 1, 11, 1, 5
        args.parallel_seeds, args.parallel_budget = 1, 14
    parts = set(args.parts.split(","))

    started = time.perf_counter()
    workdir = tempfile.mkdtemp(prefix="oracle-bench-")
    print("# Oracle benchmark: stock keras-tuner BO vs FastBayesianOptimizationOracle\n")
    print(f"Machine: {machine_facts()}")
    print(f"Command: python -m bench.oracle_bench {' '.join(argv if argv is not None else sys.argv[1:])}\n")
    try:
        # Regret (sequential), which also gives latency samples at 25 and 50.
        regret: dict[str, dict[str, list[Run]]] = {}
        for name in ("mlp", "cnn") if "regret" in parts else ():
            problem = PROBLEMS[name]
            regret[name] = {}
            for kind in ("stock", "ours", "random"):
                regret[name][kind] = [
                    drive(
                        kind,
                        problem,
                        seed,
                        args.budget,
                        args.noise,
                        1,
                        workdir,
                        num_initial_points=args.initial,
                    )
                    for seed in range(1, args.seeds + 1)
                ]
                print(
                    f"  regret {name}/{kind} done at {time.perf_counter() - started:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
        # Latency: timed decisions at each checkpoint of one MLP search per oracle.
        latency: dict[str, list[Run]] = {}
        samples = {"stock": args.stock_samples, "ours": args.ours_samples}
        for kind in ("stock", "ours") if "latency" in parts else ():
            latency[kind] = [latency_run(kind, samples[kind], workdir)]
            print(
                f"  latency {kind} done at {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True
            )
        # Parallel duplicates.
        parallel: dict[str, list[Run]] = {}
        mlp = PROBLEMS["mlp"]
        random_start = args.initial
        for kind in ("stock", "ours", "random") if "parallel" in parts else ():
            parallel[kind] = [
                drive(
                    kind,
                    mlp,
                    100 + s,
                    args.parallel_budget,
                    args.noise,
                    args.workers,
                    workdir,
                    count_from=random_start,
                    num_initial_points=args.initial,
                )
                for s in range(args.parallel_seeds)
            ]
            print(
                f"  parallel {kind} done at {time.perf_counter() - started:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    if latency:
        print("## Decision latency (MLP space, sequential, in-process; ms)\n")
        print(
            f"At each checkpoint N, {args.stock_samples} (stock) / {args.ours_samples} (ours) "
            "timed create/end cycles after a random fill to N trials (see latency_run).\n"
        )
        print("\n".join(latency_table(latency)))
    if regret:
        print("\n## Regret (optimum minus the true value of the best-observed trial; accuracy points x100)\n")
        print(
            f"Budget {args.budget} trials ({args.initial} random first), seeds 1..{args.seeds}, "
            f"noise sd {args.noise}; "
            f"optimum MLP {PROBLEMS['mlp'].optimum:.4f}, CNN {PROBLEMS['cnn'].optimum:.4f}.\n"
        )
        print("\n".join(regret_table(regret)))
    if parallel:
        print(
            f"\n## Parallel proposals (MLP space, {args.workers} workers, budget "
            f"{args.parallel_budget}, {args.parallel_seeds} seeds; counted once "
            f"{random_start} trials have completed, i.e. after the random start)\n"
        )
        print("\n".join(parallel_table(parallel, args.workers)))
    print(f"\nTotal wall time {time.perf_counter() - started:.0f} s.")

    if args.json:
        raw = {
            "args": vars(args),
            "machine": machine_facts(),
            "latency": {k: [r.__dict__ for r in v] for k, v in latency.items()},
            "regret": {p: {k: [r.__dict__ for r in v] for k, v in d.items()} for p, d in regret.items()},
            "parallel": {k: [r.__dict__ for r in v] for k, v in parallel.items()},
        }
        with open(args.json, "w") as f:
            json.dump(raw, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
