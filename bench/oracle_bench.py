"""The Bayesian-optimization oracle at cluster scale, side by side with what a user would pick.

    python -m bench.oracle_bench            # the full run documented in docs/oracle.md
    python -m bench.oracle_bench --quick    # smoke of the harness (tiny sizes, seconds)

Oracles are driven in-process exactly as the chief drives them (``create_trial`` ->
``update_trial`` -> ``end_trial``), with storage attached as ``keras_tuner.Tuner`` attaches it, so
the timings include keras-tuner's own bookkeeping (trial and oracle JSON files). Objectives are the
synthetic ones of ``bench/spaces.py`` (the seed's MLP and CNN spaces); the optimum is known by
enumeration, so regret is exact. The contenders:

* ``stock``: keras-tuner's ``BayesianOptimizationOracle`` (seconds per decision: measured at
  100 completed trials only);
* ``before``: our ``FastBayesianOptimizationOracle`` as it was before issue 16 (every completed
  and pending trial in the model, kernel refits inline): the same class with the cluster-scale
  switches off, so the comparison isolates them;
* ``ours``: ``FastBayesianOptimizationOracle`` as shipped (bounded model, background refits);
* ``optuna``: Optuna's ``TPESampler`` with its defaults (``pip install .[bench]``), asked and told
  through Optuna's ask-and-tell interface over the same spaces;
* ``random``: keras-tuner's random search, for scale.

Parts (``--parts``, all by default except ``parallel``):

* ``latency``: per oracle one MLP search; at each checkpoint N (100/250/500/1,000) the history
  is filled to N completed trials by the oracle's own random sampler (``num_initial_points`` set
  out of reach), then the default is restored and the next create/end cycles are timed, without
  waiting for background fits (they compete for the CPU as they would in a chief).
* ``regret``: per problem, oracle and seed one sequential search of the largest budget; regret at
  each budget is the optimum minus the true value of the best-observed trial among the first
  ``budget`` trials (no oracle's proposals depend on ``max_trials``). Our oracle waits for its
  background fit between trials here (a real trial takes far longer than a fit), which also makes
  the runs reproducible. BO oracles of the same seed share their random start (paired seeds).
* ``load``: ``bench.load`` with 256 simulated workers against a real chief running our
  Bayesian optimization on a study that already holds 500 completed trials, and the same with
  random search (the server without the oracle's maths) for reference.
* ``stopping``: the chief's early-stopping report (median rule) with 100 and 1,000 ended trials.
* ``parallel``: four workers, duplicates and near duplicates of pending trials (as before).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras_tuner  # noqa: E402
import numpy as np  # noqa: E402
from keras_tuner.engine import hyperparameters as hp_types  # noqa: E402

from bench.spaces import PROBLEMS, Problem  # noqa: E402
from tuner_service.compat import attach_project_dir  # noqa: E402
from tuner_service.oracles import FastBayesianOptimizationOracle  # noqa: E402

OBJECTIVE = keras_tuner.Objective("score", "max")
PARTS = ("latency", "regret", "load", "stopping", "parallel")
# The goals (issue 16), checked in the summary.
GOAL_P50_MS, GOAL_P99_MS, GOAL_MAX_MS, GOAL_LOAD_P99_MS = 20.0, 100.0, 250.0, 50.0


def _stock(**kw):
    return keras_tuner.oracles.BayesianOptimizationOracle(**kw)


def _ours(**kw):
    return FastBayesianOptimizationOracle(**kw)


def _before(**kw):
    """Our oracle with issue 16's switches off: every trial in the model, kernel fits inline."""
    oracle = FastBayesianOptimizationOracle(**kw)
    oracle.max_model_points = oracle.max_pending_points = 10**9
    oracle.refit_in_background = False
    return oracle


def _random(**kw):
    kw = {k: v for k, v in kw.items() if k not in ("num_initial_points", "alpha", "beta")}
    return keras_tuner.oracles.RandomSearchOracle(**kw)


MAKERS: dict[str, Callable] = {"stock": _stock, "before": _before, "ours": _ours, "random": _random}


@dataclass
class Run:
    """What one oracle did on one problem and seed."""

    create_s: list[tuple[int, float]] = field(default_factory=list)  # (completed, seconds)
    end_s: list[tuple[int, float]] = field(default_factory=list)
    regret_at: dict[int, float] = field(default_factory=dict)  # budget -> regret
    repeats: int = 0  # proposals identical to an earlier trial
    same_model: int = 0  # proposals that build a model already built
    near_pending: int = 0  # proposals at most one model hyperparameter from a pending trial
    proposals: int = 0
    seconds: float = 0.0


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
    budgets: tuple[int, ...],
    noise: float,
    workers: int,
    workdir: str,
    count_from: int = 0,
    num_initial_points: int | None = None,
) -> Run:
    """Runs ``max(budgets)`` trials with ``workers`` trials kept pending, the oldest finishing first.

    Proposals made with fewer than ``count_from`` completed trials are not counted in the
    duplicate statistics (set it to the random start's length to judge the model's proposals).
    """
    if kind == "optuna":
        return drive_optuna(problem, seed, budgets, noise)
    budget = max(budgets)
    oracle = make_oracle(kind, problem, seed, budget, workdir, num_initial_points)
    run = Run()
    pending: list = []  # (tuner_id, trial), oldest first
    seen_values: list[dict] = []
    seen_models: set = set()
    best_observed, best_true = float("-inf"), float("-inf")
    evaluations = 0
    started = time.perf_counter()

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
        nonlocal best_observed, best_true, evaluations
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
        if hasattr(oracle, "wait_for_refit"):
            oracle.wait_for_refit(timeout=600)  # a real trial outlasts a fit: see the docstring
        if score > best_observed:
            best_observed, best_true = score, problem.objective(values)
        if evaluations in budgets:
            run.regret_at[evaluations] = problem.optimum - best_true
        return tuner_id

    for w in range(workers):
        if not ask(f"worker-{w}"):
            break
    while pending:
        tuner_id = finish()
        ask(tuner_id)
    run.seconds = time.perf_counter() - started
    return run


def _optuna_values(trial, space: keras_tuner.HyperParameters) -> dict:
    """keras-tuner's space as Optuna distributions (the seed's spaces: Choice, Int with a step)."""
    values = {}
    for hp in space.space:
        if isinstance(hp, hp_types.Fixed):
            values[hp.name] = hp.value
        elif isinstance(hp, hp_types.Boolean):
            values[hp.name] = trial.suggest_categorical(hp.name, [False, True])
        elif isinstance(hp, hp_types.Choice):
            values[hp.name] = trial.suggest_categorical(hp.name, list(hp.values))
        elif isinstance(hp, hp_types.Int):
            values[hp.name] = trial.suggest_int(
                hp.name, hp.min_value, hp.max_value, step=hp.step or 1, log=hp.sampling == "log"
            )
        elif isinstance(hp, hp_types.Float):
            values[hp.name] = trial.suggest_float(
                hp.name, hp.min_value, hp.max_value, step=hp.step, log=hp.sampling == "log"
            )
        else:
            raise TypeError(f"no Optuna distribution for {type(hp).__name__} {hp.name!r}")
    return values


def drive_optuna(problem: Problem, seed: int, budgets: tuple[int, ...], noise: float) -> Run:
    """Optuna's TPE sampler (defaults) on the same space, objective and noise sequence."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    space = problem.make_space()
    run = Run()
    seen: list[dict] = []
    best_observed, best_true = float("-inf"), float("-inf")
    started = time.perf_counter()
    for evaluation in range(max(budgets)):
        t0 = time.perf_counter()
        trial = study.ask()
        values = _optuna_values(trial, space)
        run.create_s.append((evaluation, time.perf_counter() - t0))
        run.proposals += 1
        run.repeats += values in seen
        seen.append(values)
        score = problem.noisy(values, seed, evaluation, noise)
        study.tell(trial, score)
        if score > best_observed:
            best_observed, best_true = score, problem.objective(values)
        if evaluation + 1 in budgets:
            run.regret_at[evaluation + 1] = problem.optimum - best_true
    run.seconds = time.perf_counter() - started
    return run


def latency_run(kind: str, checkpoints: tuple[int, ...], per_window: int, workdir: str) -> Run:
    """Times ``per_window`` model-based decisions at each checkpoint of one MLP search.

    Between checkpoints the history is filled by the oracle's own random sampler (the public
    ``num_initial_points`` set out of reach), which costs every oracle the same. At a checkpoint N
    the default is restored and the next ``per_window`` create/end cycles are timed, so they are
    taken with N..N+per_window-1 completed trials; samples are recorded as ``(N, seconds)``.
    Background fits are not waited for: they run while the next decisions are timed.
    """
    problem = PROBLEMS["mlp"]
    oracle = make_oracle(kind, problem, 0, max(checkpoints) + per_window + 1, workdir)
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

    for checkpoint in checkpoints:
        oracle.num_initial_points = 10**9
        while sum(t.status == "COMPLETED" for t in oracle.trials.values()) < checkpoint:
            cycle(None)
        oracle.num_initial_points = None
        for _ in range(per_window):
            cycle(checkpoint)
    if hasattr(oracle, "wait_for_refit"):
        oracle.wait_for_refit(timeout=600)
    return run


def stopping_cost(ended_counts: tuple[int, ...], epochs: int, reports: int) -> dict[int, float]:
    """Seconds per early-stopping report (median rule) with N ended trials of ``epochs`` epochs."""
    from tuner_service.stopping import EarlyStopping, MedianRule

    rng = random.Random(0)
    out = {}
    for n in ended_counts:
        stop = EarlyStopping(MedianRule(min_epochs=1, min_trials=3), "max")
        for t in range(n):
            for step in range(epochs):
                stop.report(f"ended-{t}", step, 0.5 + 0.4 * rng.random())
            stop.trial_ended(f"ended-{t}")
        t0 = time.perf_counter()
        done = 0
        while done < reports:
            trial_id = f"running-{done}"
            for step in range(epochs):  # good trials: none stopped, every report decided in full
                stop.report(trial_id, step, 0.95 + 0.05 * rng.random())
                done += 1
        out[n] = (time.perf_counter() - t0) / done
    return out


# --- reporting --------------------------------------------------------------------------------


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000.0, q)) if xs else float("nan")


def _at(samples: list[tuple[int, float]], checkpoint: int) -> list[float]:
    return [s for c, s in samples if c == checkpoint]


def _fmt_ms(x: float) -> str:
    if x != x:  # nan
        return "-"
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def latency_stats(runs: dict[str, list[Run]], kind: str, n: int, call: str = "create") -> dict:
    xs = [s for r in runs.get(kind, []) for s in _at(getattr(r, f"{call}_s"), n)]
    return {"p50": _pct(xs, 50), "p99": _pct(xs, 99), "max": _pct(xs, 100), "n": len(xs)}


def latency_table(runs: dict[str, list[Run]], checkpoints: tuple[int, ...]) -> list[str]:
    kinds = [k for k in ("stock", "before", "ours") if k in runs]
    head = " | ".join(f"{k} p50 / p99 / max" for k in kinds)
    lines = [
        f"| completed | call | {head} | samples ({'/'.join(kinds)}) |",
        "|---|---|" + "---|" * len(kinds) + "---|",
    ]
    for n in checkpoints:
        for call in ("create", "end"):
            cells, counts = [], []
            for kind in kinds:
                st = latency_stats(runs, kind, n, call)
                counts.append(str(st["n"]))
                cells.append(
                    "-"
                    if not st["n"]
                    else f"{_fmt_ms(st['p50'])} / {_fmt_ms(st['p99'])} / {_fmt_ms(st['max'])} ms"
                )
            name = "CreateTrial" if call == "create" else "EndTrial"
            lines.append(f"| {n} | {name} | {' | '.join(cells)} | {'/'.join(counts)} |")
    return lines


def _mean_sd(xs: list[float]) -> str:
    if not xs:
        return "-"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{np.mean(xs) * 100:.2f} ± {sd * 100:.2f} (n={len(xs)})"


def _paired(a: list[Run], b: list[Run], budget: int) -> str:
    """``a`` better / tie / worse than ``b`` on the seeds both ran (regret at ``budget``)."""
    pairs = [
        (x.regret_at[budget], y.regret_at[budget])
        for x, y in zip(a, b, strict=False)
        if budget in x.regret_at and budget in y.regret_at
    ]
    pairs = [(x, y) for x, y in pairs if y == y]
    if not pairs:
        return "-"
    better = sum(x < y - 1e-12 for x, y in pairs)
    worse = sum(x > y + 1e-12 for x, y in pairs)
    return f"{better}/{len(pairs) - better - worse}/{worse}"


def regret_values(runs: list[Run], budget: int) -> list[float]:
    return [r.regret_at[budget] for r in runs if budget in r.regret_at]


def regret_table(results: dict[str, dict[str, list[Run]]], budgets: tuple[int, ...]) -> list[str]:
    kinds = [
        k for k in ("stock", "before", "ours", "optuna", "random") if any(k in d for d in results.values())
    ]
    lines = [
        "| problem | budget | "
        + " | ".join(kinds)
        + " | ours vs before (b/t/w) | ours vs optuna (b/t/w) | ours vs stock (b/t/w) |",
        "|---|---|" + "---|" * len(kinds) + "---|---|---|",
    ]
    for name, by_kind in results.items():
        for budget in budgets:
            cells = [_mean_sd(regret_values(by_kind.get(k, []), budget)) for k in kinds]
            ours = by_kind.get("ours", [])
            vs = [_paired(ours, by_kind.get(other, []), budget) for other in ("before", "optuna", "stock")]
            lines.append(f"| {name} | {budget} | {' | '.join(cells)} | {' | '.join(vs)} |")
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


def load_table(results: list) -> list[str]:
    """The clients' timings, then the chief's own (its Prometheus histograms: no network or
    client scheduling; p99 estimated within a bucket, the share within 50 ms exact)."""
    lines = [
        "| chief (ours) | completed before | clients | RPCs | errors | p50 | p99 | max"
        " | CreateTrial p50 / p99 / max | other RPCs p99 | chief's view: p99 / within 50 ms"
        " / decision p99 | trials |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        chief = "-"
        if r.server_p99_ms is not None:
            chief = (
                f"~{r.server_p99_ms:.1f} ms / {100 * r.server_within_50ms:.2f} %"
                f" / ~{r.decision_p99_ms or 0:.1f} ms"
            )
        lines.append(
            f"| {r.tuner} | {r.preload} | {r.clients} | {r.rpcs} | {r.errors} | {r.p50_ms:.1f} ms"
            f" | {r.p99_ms:.1f} ms | {r.max_ms:.1f} ms | {r.create_p50_ms:.1f} / {r.create_p99_ms:.1f}"
            f" / {r.create_max_ms:.1f} ms | {r.other_p99_ms:.1f} ms | {chief}"
            f" | {r.trials_completed}/{r.clients * r.cycles} |"
        )
    return lines


def goals(latency: dict[str, list[Run]], load_results: list, checkpoints: tuple[int, ...]) -> list[str]:
    """Issue 16's goals, each with the measured value and met / MISSED."""
    lines = ["| goal | measured | |", "|---|---|---|"]

    def row(goal: str, value: float, limit: float, unit: str = "ms") -> None:
        met = "met" if value <= limit else f"MISSED by {value - limit:.1f} {unit}"
        lines.append(f"| {goal} | {value:.1f} {unit} | {met} |")

    top = max(checkpoints)
    if "ours" in latency:
        st = latency_stats(latency, "ours", top)
        row(f"CreateTrial p50 at {top} completed ≤ {GOAL_P50_MS:g} ms", st["p50"], GOAL_P50_MS)
        row(f"CreateTrial p99 at {top} completed ≤ {GOAL_P99_MS:g} ms", st["p99"], GOAL_P99_MS)
        row(f"CreateTrial max at {top} completed ≤ {GOAL_MAX_MS:g} ms", st["max"], GOAL_MAX_MS)
    for r in load_results:
        if r.tuner == "bayesian":
            row(
                f"RPC p99, {r.clients} clients, {r.preload} completed before ≤ {GOAL_LOAD_P99_MS:g} ms",
                r.p99_ms,
                GOAL_LOAD_P99_MS,
            )
            lines.append(
                f"| errors, {r.clients} clients | {r.errors} | {'met' if r.errors == 0 else 'MISSED'} |"
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


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x)


def _progress(started: float, what: str) -> None:
    print(f"  {what} done at {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke of the harness: tiny sizes, seconds")
    parser.add_argument("--checkpoints", type=_ints, default=(100, 250, 500, 1000))
    parser.add_argument("--stock-checkpoints", type=_ints, default=(100,), help="stock is slow")
    parser.add_argument("--ours-samples", type=int, default=50, help="timed decisions per checkpoint")
    parser.add_argument("--before-samples", type=int, default=10)
    parser.add_argument("--stock-samples", type=int, default=4)
    parser.add_argument("--budgets", type=_ints, default=(100, 1000), help="regret budgets")
    parser.add_argument("--stock-budget", type=int, default=100, help="stock's regret runs stop here")
    parser.add_argument("--seeds", type=int, default=3, help="regret seeds per problem")
    parser.add_argument(
        "--slow-seeds", type=int, default=2, help="seeds for stock and before (slow at their largest budget)"
    )
    parser.add_argument(
        "--initial", type=int, default=None, help="num_initial_points (default: the oracle's)"
    )
    parser.add_argument("--noise", type=float, default=0.0, help="sd of the objective's noise")
    parser.add_argument("--load-clients", type=int, default=256)
    parser.add_argument("--load-cycles", type=int, default=3)
    parser.add_argument("--load-think", type=float, default=5.0)
    parser.add_argument("--load-preload", type=int, default=500, help="completed trials before the load")
    parser.add_argument("--parallel-seeds", type=int, default=2)
    parser.add_argument("--parallel-budget", type=int, default=26)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument(
        "--parts", default="latency,regret,load,stopping", help=f"comma-separated subset of {','.join(PARTS)}"
    )
    parser.add_argument("--kinds", default="stock,before,ours,optuna,random", help="oracles to run")
    parser.add_argument("--json", help="also write the raw results here")
    args = parser.parse_args(argv)
    if args.quick:  # no stock oracle (seconds per decision) unless asked for with --kinds
        if args.kinds == parser.get_default("kinds"):
            args.kinds = "before,ours,optuna,random"
        args.checkpoints, args.stock_checkpoints = (25, 40), (25,)
        args.ours_samples, args.before_samples, args.stock_samples = 5, 2, 1
        args.budgets, args.stock_budget, args.seeds, args.slow_seeds, args.initial = (12, 24), 12, 1, 1, 5
        args.load_clients, args.load_cycles, args.load_think, args.load_preload = 8, 1, 0.2, 25
        args.parallel_seeds, args.parallel_budget = 1, 14
    parts = set(args.parts.split(","))
    kinds = [k for k in args.kinds.split(",") if k]
    if unknown := (parts - set(PARTS)) or set(kinds) - {*MAKERS, "optuna"}:
        parser.error(f"unknown part or oracle: {', '.join(sorted(unknown))}")
    if "optuna" in kinds:
        try:
            import optuna  # noqa: F401
        except ImportError:
            print("optuna is not installed (pip install '.[bench]'): leaving it out", file=sys.stderr)
            kinds.remove("optuna")

    started = time.perf_counter()
    workdir = tempfile.mkdtemp(prefix="oracle-bench-")
    command = " ".join(argv if argv is not None else sys.argv[1:])
    print("# Oracle benchmark: FastBayesianOptimizationOracle at cluster scale\n")
    print(f"Machine: {machine_facts()}")
    print(f"Command: python -m bench.oracle_bench {command}\n")
    latency: dict[str, list[Run]] = {}
    regret: dict[str, dict[str, list[Run]]] = {}
    load_results: list = []
    stopping: dict[int, float] = {}
    parallel: dict[str, list[Run]] = {}
    try:
        if "latency" in parts:
            plan = {"stock": args.stock_checkpoints, "before": args.checkpoints, "ours": args.checkpoints}
            samples = {"stock": args.stock_samples, "before": args.before_samples, "ours": args.ours_samples}
            for kind in [k for k in ("stock", "before", "ours") if k in kinds]:
                latency[kind] = [latency_run(kind, plan[kind], samples[kind], workdir)]
                _progress(started, f"latency {kind}")
        for name in ("mlp", "cnn") if "regret" in parts else ():
            regret[name] = {}
            for kind in kinds:
                slow = kind in ("stock", "before")
                budgets = tuple(b for b in args.budgets if kind != "stock" or b <= args.stock_budget)
                if not budgets:
                    continue
                seeds = range(1, (args.slow_seeds if slow else args.seeds) + 1)
                regret[name][kind] = [
                    drive(
                        kind,
                        PROBLEMS[name],
                        seed,
                        budgets,
                        args.noise,
                        1,
                        workdir,
                        num_initial_points=args.initial,
                    )
                    for seed in seeds
                ]
                _progress(started, f"regret {name}/{kind}")
        if "load" in parts:
            from bench import load

            for tuner in ("bayesian", "random"):
                load_results.append(
                    load.run_load(
                        "ours",
                        args.load_clients,
                        args.load_cycles,
                        args.load_think,
                        tuner=tuner,
                        preload=args.load_preload,
                    )
                )
                _progress(started, f"load {tuner}")
        if "stopping" in parts:
            stopping = stopping_cost((100, 1000) if not args.quick else (10, 100), 10, 200)
            _progress(started, "stopping")
        for kind in [k for k in ("stock", "ours", "random") if k in kinds] if "parallel" in parts else ():
            parallel[kind] = [
                drive(
                    kind,
                    PROBLEMS["mlp"],
                    100 + s,
                    (args.parallel_budget,),
                    args.noise,
                    args.workers,
                    workdir,
                    count_from=args.initial or 21,
                    num_initial_points=args.initial,
                )
                for s in range(args.parallel_seeds)
            ]
            _progress(started, f"parallel {kind}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    if latency:
        print("## Decision latency (MLP space, sequential, in-process; ms)\n")
        print(
            f"At each checkpoint N, {args.stock_samples} (stock) / {args.before_samples} (before) / "
            f"{args.ours_samples} (ours) timed create/end cycles after a random fill to N trials.\n"
        )
        print("\n".join(latency_table(latency, tuple(sorted({*args.checkpoints, *args.stock_checkpoints})))))
    if regret:
        print("\n## Regret (optimum minus the true value of the best-observed trial; accuracy points x100)\n")
        print(
            f"mean ± sd over seeds (n = seeds run); stock runs to {args.stock_budget} trials; stock and"
            f" before use seeds 1..{args.slow_seeds}, the others 1..{args.seeds};"
            " b/t/w = ours better/tie/worse"
            f" on the seeds both ran; num_initial_points {args.initial or 'default'}; noise sd {args.noise};"
            f" optimum MLP {PROBLEMS['mlp'].optimum:.4f}, CNN {PROBLEMS['cnn'].optimum:.4f}.\n"
        )
        print("\n".join(regret_table(regret, args.budgets)))
        print(
            "\nSearch time per run (s, mean): "
            + "; ".join(
                f"{name}/{kind} {np.mean([r.seconds for r in runs]):.1f}"
                for name, by_kind in regret.items()
                for kind, runs in by_kind.items()
            )
        )
    if load_results:
        print(
            f"\n## Load: {args.load_clients} simulated workers x {args.load_cycles} trials"
            f" (~{args.load_think:g} s each) against our chief (bench/load.py)\n"
        )
        print("\n".join(load_table(load_results)))
    if stopping:
        print("\n## Early stopping: one per-epoch report (median rule, 10-epoch trials)\n")
        print("| ended trials | per report |\n|---|---|")
        for n, s in stopping.items():
            print(f"| {n} | {s * 1e6:.1f} µs |")
    if parallel:
        print(
            f"\n## Parallel proposals (MLP space, {args.workers} workers, budget "
            f"{args.parallel_budget}, {args.parallel_seeds} seeds; counted after the random start)\n"
        )
        print("\n".join(parallel_table(parallel, args.workers)))
    if latency or load_results:
        print("\n## Goals (issue 16)\n")
        print("\n".join(goals(latency, load_results, args.checkpoints)))
    print(f"\nTotal wall time {time.perf_counter() - started:.0f} s.")

    if args.json:
        raw = {
            "args": vars(args),
            "machine": machine_facts(),
            "latency": {k: [asdict(r) for r in v] for k, v in latency.items()},
            "regret": {p: {k: [asdict(r) for r in v] for k, v in d.items()} for p, d in regret.items()},
            "load": [{**asdict(r), "ok": r.ok} for r in load_results],
            "stopping": stopping,
            "parallel": {k: [asdict(r) for r in v] for k, v in parallel.items()},
        }
        with open(args.json, "w") as f:
            json.dump(raw, f, indent=1)
    failed_load = any(not r.ok for r in load_results)
    return 1 if failed_load else 0


if __name__ == "__main__":
    sys.exit(main())
