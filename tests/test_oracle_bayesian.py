"""FastBayesianOptimizationOracle: state, duplicates, grids, threads, search quality.

Fast (well under a minute together). Latency is not asserted here: benchmarks are not tests
(``python -m bench.oracle_bench``).
"""

from __future__ import annotations

import copy
import inspect
import itertools
import json
import math
import os
import shutil
import threading

import keras_tuner
import numpy as np
import pytest

from bench.spaces import cnn_space, mlp_space
from tuner_service import compat
from tuner_service.oracles import FastBayesianOptimizationOracle
from tuner_service.oracles._gp import Posterior, Theta
from tuner_service.oracles._space import SpaceCodec

OBJECTIVE = keras_tuner.Objective("score", "max")


def objective(v) -> float:
    """A smooth synthetic score with interactions, optimum 0.0 at a known interior point."""
    n = v["n_layers"]
    score = -(((v["units_0"] - 250) / 150) ** 2) - 0.5 * (n - 2) ** 2
    if n >= 2:
        score -= ((v["units_1"] - 0.6 * v["units_0"]) / 150) ** 2
    score -= ((v["dropout"] - 0.1 * n + 0.1) / 0.1) ** 2 * 0.3
    score -= {("adam", 0.001): 0, ("adam", 0.01): 0.3, ("adam", 0.1): 2.0}.get(
        (v["optimizer"], v["learning_rate"]), 0.4
    )
    return score


def make(tmp_path, name="study", **kw) -> FastBayesianOptimizationOracle:
    kw.setdefault("hyperparameters", mlp_space())
    kw.setdefault("max_trials", 40)
    kw.setdefault("num_initial_points", 6)
    kw.setdefault("seed", 7)
    oracle = FastBayesianOptimizationOracle(objective=OBJECTIVE, **kw)
    compat.attach_project_dir(oracle, str(tmp_path), name)
    oracle.verbose = 0
    return oracle


def step(oracle, tuner_id="w0", f=objective):
    """One create -> update -> end cycle; returns the trial's values (None when stopped)."""
    trial = oracle.create_trial(tuner_id)
    if trial.status != "RUNNING":
        return None
    values = dict(trial.hyperparameters.values)
    oracle.update_trial(trial.trial_id, {"score": f(values)})
    trial.status = "COMPLETED"
    oracle.end_trial(trial)
    # Sequential and reproducible: the next decision uses the fit this one may have started.
    if isinstance(oracle, FastBayesianOptimizationOracle):
        assert oracle.wait_for_refit(timeout=60)
    return values


def test_constructor_matches_stock():
    stock = inspect.signature(keras_tuner.oracles.BayesianOptimizationOracle.__init__)
    ours = inspect.signature(FastBayesianOptimizationOracle.__init__)
    assert list(ours.parameters) == list(stock.parameters)
    for name, param in stock.parameters.items():
        assert ours.parameters[name].default == param.default, name


def test_state_round_trip_continues_identically(tmp_path):
    a = make(tmp_path / "a")
    for _ in range(15):
        step(a)
    # keras-tuner's end_trial() saves oracle.json *before* it drops the trial from the ongoing
    # ones, so the file lags one call behind; a chief saves again on shutdown (as here).
    a.save()
    state = a.get_state()
    assert json.loads(json.dumps(state)) == state  # JSON, like stock
    assert state["fast_bo"] is not None and state["beta"] == 2.6
    # A fresh oracle reloads the saved project (trial files + oracle.json), as a restarted chief.
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    b = make(tmp_path / "b")
    b.reload()
    reloaded = b.get_state()
    assert set(reloaded.pop("tried_so_far")) == set(state.pop("tried_so_far"))
    assert reloaded == state
    for _ in range(8):
        assert step(a) == step(b)


def test_reloads_a_stock_state(tmp_path):
    """A stock oracle.json has no 'fast_bo' entry: we refit on demand and carry on."""
    a = make(tmp_path / "a")
    for _ in range(10):
        step(a)
    a.save()
    fname = os.path.join(str(tmp_path / "a"), "study", "oracle.json")
    with open(fname) as f:
        state = json.load(f)
    del state["fast_bo"]
    with open(fname, "w") as f:
        json.dump(state, f)
    b = make(tmp_path / "a")
    b.reload()
    values = step(b)
    assert values is not None and b.last_decision["refitted"]


def test_no_duplicates_and_stops_when_space_exhausted(tmp_path):
    hp = keras_tuner.HyperParameters()
    hp.Int("a", 1, 4)
    hp.Choice("b", ["x", "y", "z"])  # 12 points in all
    oracle = make(tmp_path, hyperparameters=hp, max_trials=30, num_initial_points=3)
    seen = []
    while (values := step(oracle, f=lambda v: -abs(v["a"] - 2.5))) is not None:
        seen.append((values["a"], values["b"]))
    assert sorted(seen) == sorted({(a, b) for a in range(1, 5) for b in "xyz"})


def test_pending_trials_get_distinct_proposals(tmp_path):
    oracle = make(tmp_path, max_trials=60)
    for _ in range(10):
        step(oracle)
    # Four workers ask before any of them reports: four different configurations.
    pending = [oracle.create_trial(f"w{i}") for i in range(4)]
    keys = {json.dumps(t.hyperparameters.values, sort_keys=True) for t in pending}
    assert len(keys) == 4
    assert oracle.last_decision["mode"] == "model" and oracle.last_decision["pending"] == 3
    # Keep four pending for a while: never a configuration that exists already, never a
    # neighbour of a running one.
    all_keys = {json.dumps(t.hyperparameters.values, sort_keys=True) for t in oracle.trials.values()}
    for i in range(20):
        trial = pending.pop(0)
        oracle.update_trial(trial.trial_id, {"score": objective(trial.hyperparameters.values)})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
        new = oracle.create_trial(f"w{i % 4}")
        key = json.dumps(new.hyperparameters.values, sort_keys=True)
        assert key not in all_keys
        # Not a near duplicate either: with 7 hyperparameters, at least 4 differ from each
        # pending trial ((d - 1) // 2 = 3 is the exclusion radius).
        for other in pending:
            a, b = new.hyperparameters.values, other.hyperparameters.values
            assert sum(a[k] != b[k] for k in a) >= 4
        all_keys.add(key)
        pending.append(new)


def test_pending_points_lose_their_uncertainty():
    """The kriging believer: a pending point's variance collapses, the mean does not move."""
    codec = SpaceCodec(mlp_space())
    rng = np.random.default_rng(0)
    X = codec.sample(rng, 20)
    y = rng.standard_normal(20)
    theta = Theta.default(codec.d, 1e-4)
    probe = codec.sample(rng, 1)
    plain = Posterior(theta, *codec.gp_inputs(X), y, *codec.gp_inputs(X[:0]), codec.cat_sizes)
    believer = Posterior(theta, *codec.gp_inputs(X), y, *codec.gp_inputs(probe), codec.cat_sizes)
    mu0, sd0 = plain.predict(*codec.gp_inputs(probe))
    mu1, sd1 = believer.predict(*codec.gp_inputs(probe))
    assert mu1 == pytest.approx(mu0)
    assert sd1[0] < 0.1 * sd0[0]  # down to the noise level


def test_proposals_stay_on_the_grid(tmp_path):
    hp = mlp_space()
    hp.Float("decay", 1e-5, 1e-2, sampling="log")  # a continuous one too
    hp.Float("momentum", 0.5, 0.9, step=0.1)
    hp.Boolean("bn")
    oracle = make(tmp_path, hyperparameters=hp, max_trials=30)
    allowed = {p.name: list(p.values) for p in hp.space if p.name != "decay"}
    for _ in range(30):
        values = step(oracle, f=lambda v: objective(v) - abs(math.log10(v["decay"]) + 3))
        for name, choices in allowed.items():
            assert any(
                values[name] == c or (isinstance(c, float) and math.isclose(values[name], c)) for c in choices
            ), (name, values[name])
        assert 1e-5 <= values["decay"] <= 1e-2
        assert isinstance(values["units_0"], int) and isinstance(values["bn"], bool)


def test_conditional_space(tmp_path):
    hp = keras_tuner.HyperParameters()
    model = hp.Choice("model", ["linear", "mlp"])
    with hp.conditional_scope("model", ["mlp"]):
        hp.Int("width", 8, 64, step=8)
    hp.Choice("lr", [0.1, 0.01, 0.001])
    oracle = make(tmp_path, hyperparameters=hp, max_trials=25, num_initial_points=4)
    del model
    seen = set()
    for _ in range(25):
        values = step(oracle, f=lambda v: -((v.get("width", 0) - 40) ** 2) / 1e3 - abs(v["lr"] - 0.01))
        if values is None:
            break
        assert ("width" in values) == (values["model"] == "mlp")
        key = json.dumps(values, sort_keys=True)
        assert key not in seen
        seen.add(key)


def test_space_that_grows_during_the_search(tmp_path):
    """Hypermodels register per-layer hps on first use; the oracle must take them on board."""
    hp = keras_tuner.HyperParameters()
    hp.Int("n_layers", 1, 3)
    hp.Int("units_0", 50, 350, step=50)
    oracle = make(tmp_path, hyperparameters=hp, num_initial_points=4)
    for i in range(12):
        trial = oracle.create_trial("w0")
        hps = trial.hyperparameters.copy()
        if i == 5:  # a worker's build registers a new hyperparameter
            hps.Int("units_1", 50, 350, step=50)
        oracle.update_trial(trial.trial_id, {"score": -abs(hps.values["units_0"] - 200)})
        trial.hyperparameters = hps
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
    assert "units_1" in oracle.get_space().values
    assert "units_1" in oracle.create_trial("w0").hyperparameters.values


def test_thread_safety_under_concurrent_create_and_end(tmp_path):
    oracle = make(tmp_path, max_trials=40)
    errors = []

    def worker(tuner_id):
        try:
            while step(oracle, tuner_id) is not None:
                pass
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert len(oracle.trials) == 40 and not oracle.ongoing_trials
    assert all(t.status == "COMPLETED" for t in oracle.trials.values())
    keys = {json.dumps(t.hyperparameters.values, sort_keys=True) for t in oracle.trials.values()}
    assert len(keys) == 40


def _best_after(oracle, budget):
    best = -math.inf
    for _ in range(budget):
        best = max(best, objective(step(oracle)))
    return best


def test_beats_random_search(tmp_path):
    """Same budget, same seeds, same random start: mean best score must beat random search."""
    ours, rand = [], []
    for seed in range(4):
        ours.append(_best_after(make(tmp_path / f"o{seed}", seed=seed + 1), 30))
        random_oracle = keras_tuner.oracles.RandomSearchOracle(
            objective=OBJECTIVE, max_trials=30, hyperparameters=mlp_space(), seed=seed + 1
        )
        compat.attach_project_dir(random_oracle, str(tmp_path / f"r{seed}"), "study")
        random_oracle.verbose = 0
        rand.append(_best_after(random_oracle, 30))
    assert np.mean(ours) > np.mean(rand) + 0.05, (ours, rand)


def test_private_keras_tuner_hooks(tmp_path):
    """The only private keras-tuner names we use still exist and behave (see compat.py)."""
    oracle = FastBayesianOptimizationOracle(objective=OBJECTIVE, hyperparameters=mlp_space())
    compat.attach_project_dir(oracle, str(tmp_path), "p")
    oracle.save()
    assert os.path.exists(os.path.join(str(tmp_path), "p", "oracle.json"))
    values = compat.random_values(oracle)
    assert set(values) == {hp.name for hp in mlp_space().space}
    # Same seed, same random start as stock (this is what makes benchmarks paired).
    twin = copy.deepcopy(oracle)
    assert compat.random_values(twin) == compat.random_values(oracle)


@pytest.mark.parametrize(
    ("space", "model", "depth"), [(mlp_space, "mlp", "n_layers"), (cnn_space, "cnn", "n_blocks")]
)
def test_benchmark_spaces_are_the_seed_hypermodels_spaces(space, model, depth):
    """The synthetic objectives are defined over exactly the spaces the hypermodels declare."""
    from tuner_service.models import load_hypermodel

    hp = keras_tuner.HyperParameters()
    hypermodel = load_hypermodel(model)
    hypermodel.build(hp)  # declares the depth hp and the first layer's
    hp.values[depth] = 3
    hypermodel.build(hp)  # declares the deeper layers' too
    declared = {p.name: p.get_config() for p in hp.space}
    bench = {p.name: p.get_config() for p in space().space}
    for config in (*declared.values(), *bench.values()):
        config.pop("default", None)
        config.pop("conditions", None)
    assert declared == bench


# --- cluster scale: background refits, a bounded model, many pending trials -----------------


def test_a_decision_does_not_wait_for_the_kernel_fit(tmp_path, monkeypatch):
    """The refit runs on another thread; decisions meanwhile use the previous fit."""
    from tuner_service.oracles import bayesian

    release, fitting = threading.Event(), threading.Event()
    real_fit = bayesian.fit_theta

    def slow_fit(*args, **kwargs):
        fitting.set()
        assert release.wait(timeout=60), "the test never released the fit"
        return real_fit(*args, **kwargs)

    oracle = make(tmp_path, max_trials=60)
    for _ in range(12):
        step(oracle)
    fitted_at = oracle.get_state()["fast_bo"]["fitted_at"]
    monkeypatch.setattr(bayesian, "fit_theta", slow_fit)
    # Enough new trials for a refit to be due; each decision returns while the fit is blocked.
    for _ in range(3):
        trial = oracle.create_trial("w0")
        assert trial.status == "RUNNING"
        oracle.update_trial(trial.trial_id, {"score": objective(trial.hyperparameters.values)})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
    assert fitting.wait(timeout=60) and oracle.last_decision["fitted_at"] == fitted_at
    assert not oracle.wait_for_refit(timeout=0.01)  # still fitting
    release.set()
    assert oracle.wait_for_refit(timeout=60)
    step(oracle)
    assert oracle.last_decision["fitted_at"] > fitted_at  # the new fit is in use


def test_the_model_is_trained_on_a_bounded_set_that_keeps_the_best_trials(tmp_path, monkeypatch):
    from tuner_service.oracles import bayesian

    seen = []

    class Spy(bayesian.Posterior):
        def __init__(self, theta, ordinal, cat, y, *rest):
            seen.append(np.asarray(ordinal))
            super().__init__(theta, ordinal, cat, y, *rest)

    monkeypatch.setattr(bayesian, "Posterior", Spy)
    oracle = make(tmp_path, max_trials=80)
    oracle.max_model_points, oracle.model_best_points = 20, 8
    for _ in range(40):
        step(oracle)
    assert oracle.last_decision["completed"] == 39 and oracle.last_decision["model_points"] == 20
    trained = {row.tobytes() for row in seen[-1]}
    assert len(seen[-1]) == 20
    # The 8 best of the 39 completed trials are always in the training set.
    completed = sorted((t for t in oracle.trials.values() if t.status == "COMPLETED"), key=lambda t: -t.score)
    codec = SpaceCodec(mlp_space())
    for trial in completed[:8]:
        if trial.trial_id != sorted(oracle.trials)[-1]:  # the last one completed after the decision
            assert codec.encode(trial.hyperparameters.values).tobytes() in trained


def test_more_pending_trials_than_the_model_takes_still_get_distinct_proposals(tmp_path):
    oracle = make(tmp_path, max_trials=60)
    oracle.max_pending_points = 2
    for _ in range(10):
        step(oracle)
    pending = [oracle.create_trial(f"w{i}") for i in range(8)]
    assert oracle.last_decision["pending"] == 7 and oracle.last_decision["model_points"] == 10 + 2
    values = [t.hyperparameters.values for t in pending]
    keys = {json.dumps(v, sort_keys=True) for v in values}
    assert len(keys) == 8
    earlier = {
        json.dumps(t.hyperparameters.values, sort_keys=True) for t in list(oracle.trials.values())[:10]
    }
    assert not keys & earlier


@pytest.mark.parametrize("background", [True, False])
def test_same_seed_same_history_same_proposals_beyond_the_model_cap(tmp_path, background):
    def run(where):
        oracle = make(where, max_trials=45)
        oracle.refit_in_background = background
        oracle.max_model_points, oracle.model_best_points = 16, 6
        return [step(oracle) for _ in range(40)]

    assert run(tmp_path / "a") == run(tmp_path / "b")


def test_many_workers_get_a_batch_of_distinct_spread_out_proposals(tmp_path):
    """With many trials pending, one model evaluation serves several CreateTrials."""
    oracle = make(tmp_path, max_trials=200)
    for _ in range(30):
        step(oracle)
    pending, modes = [], []
    for i in range(40):  # 40 workers ask; the 8th and later see >= 7 pending
        pending.append(oracle.create_trial(f"w{i}"))
        modes.append(oracle.last_decision["mode"])
    assert modes[:8] == ["model"] * 8 and "batch" in modes
    assert modes.count("model") < 20  # the batches did serve
    keys = [json.dumps(t.hyperparameters.values, sort_keys=True) for t in oracle.trials.values()]
    assert len(set(keys)) == len(keys)  # nothing repeated, in a batch or across batches
    # A batch is spread out: its members differ from each other in more than one hyperparameter.
    first = modes.index("batch") - 1
    batch = [pending[first].hyperparameters.values]
    for t, mode in zip(pending[first + 1 :], modes[first + 1 :], strict=True):
        if mode != "batch":
            break
        batch.append(t.hyperparameters.values)
    assert len(batch) > 1
    for a, b in itertools.combinations(batch, 2):
        assert sum(a[k] != b[k] for k in a) >= 2
    # Completed trials invalidate a batch once they are more than 2% of the data (at least 1).
    for trial in pending[:2]:
        oracle.update_trial(trial.trial_id, {"score": objective(trial.hyperparameters.values)})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
    oracle.create_trial("w-next")
    assert oracle.last_decision["mode"] == "model"
