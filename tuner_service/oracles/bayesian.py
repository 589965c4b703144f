"""Bayesian optimization that decides in milliseconds: ``FastBayesianOptimizationOracle``.

A drop-in for ``keras_tuner.oracles.BayesianOptimizationOracle`` (same constructor arguments,
same meaning, same random start, compatible ``get_state()`` keys), built for a chief that serves
many workers. What changes, and why (numbers in ``docs/oracle.md``):

* **The Gaussian process** is ours, in NumPy (``_gp.py``): Matern-5/2 as stock, one length
  scale shared by all hyperparameters as stock (per-hyperparameter length scales are a class
  switch, ``ard``; they measured worse on the seed's spaces), a fitted signal variance, and the
  noise variance fixed at ``alpha`` as stock (fitting it measured worse at 30-trial budgets).
  Unordered choices with more than two values get a same-or-different distance instead of a
  made-up order. The kernel hyperparameters are refitted by a warm-started BFGS with analytic
  gradients only when the number of completed trials has grown by ~10% (at least 2); in
  between, the model is re-conditioned on the data with the cached ones (one Cholesky).
* **Cluster scale** (issue 16; 1,000 trials, 256 workers): the refit runs on a background
  thread (``_refit.py``) that holds no lock, so no request waits for it; decisions use the
  latest finished fit. The model is trained on at most ``max_model_points`` completed trials
  (the best ones plus a seeded random sample of the rest), so a decision costs the same at
  1,000 trials as at 160; at most ``max_pending_points`` recent pending trials enter it. With
  many trials pending, one model evaluation yields a batch of spread-out proposals handed out
  one per request while the data has barely changed.
* **The acquisition** is stock's upper confidence bound ``mu - beta * sigma`` (for minimisation),
  maximised over a *candidate set* scored in one batch instead of 50 L-BFGS-B runs: random grid
  points, every one-step neighbour of the best trials, random perturbations of them, then a few
  rounds of hill-climbing on the grid from the best candidates. Spaces whose whole grid is
  small are enumerated, so there the acquisition's optimum is exact.
* **Discrete spaces are exact**: every candidate sits on the grid of allowed values (``Int``
  steps, ``Choice`` values) and candidates equal to any earlier trial, whatever its status,
  are dropped. Stock optimises in a continuous box and rounds afterwards, so it can re-propose
  a configuration it has already run.
* **Pending trials count** (parallel workers): running trials enter the model as kriging
  believers (observed at the posterior mean), which leaves the mean unchanged and collapses the
  uncertainty around them; together with the exact de-duplication no two workers get the same
  configuration and the next worker is steered away from what is already running.
* **Reproducibility**: with ``refit_in_background = False``, or a caller that waits for the
  background fit between trials (``wait_for_refit``), proposals depend only on the seed and the
  history. Otherwise they depend on which fit had finished when a request came.

Subclass of ``keras_tuner.Oracle`` rather than of stock ``BayesianOptimizationOracle``: stock's
constructor refuses to run without SciPy and scikit-learn and builds a scikit-learn model we
would never use, and every method we would inherit from it (``populate_space``,
``_vectorize_trials``, ``_vector_to_values``, ``set_state``) is replaced here. Inheriting would
tie us to its private helpers for no reuse. ``create_trial``/``update_trial``/``end_trial`` come
from ``keras_tuner.Oracle`` where they are already ``@keras_tuner.synchronized``;
``populate_space`` (where all our work happens, and the only place our caches change) runs under
``create_trial``'s lock; the background fit only reads a snapshot taken there and publishes its
result with one attribute assignment (``_fit``). We override ``end_trial`` only to start a
due refit after keras-tuner's own, re-decorated with ``@keras_tuner.synchronized`` as
keras-tuner documents for overrides (re-entrant for the same thread).
"""

from __future__ import annotations

import math
from typing import Any

import keras_tuner
import numpy as np

from tuner_service import compat
from tuner_service.oracles._gp import Posterior, Theta, fit_theta
from tuner_service.oracles._refit import BackgroundFit, single_threaded_blas
from tuner_service.oracles._space import SpaceCodec

_RUNNING = "RUNNING"
_STOPPED = "STOPPED"
_COMPLETED = "COMPLETED"


class FastBayesianOptimizationOracle(keras_tuner.Oracle):
    """Bayesian optimization oracle with millisecond decisions and parallel-aware proposals.

    Args: exactly those of ``keras_tuner.oracles.BayesianOptimizationOracle``:
        objective, max_trials, hyperparameters, allow_new_entries, tune_new_entries, seed,
        max_retries_per_trial, max_consecutive_failed_trials: as ``keras_tuner.Oracle``.
        num_initial_points: random trials before the model is used; default
            ``max(3 * len(space), 3)`` as stock. The random trials are stock's, point for point,
            for the same seed.
        alpha: the model's noise variance, in units of the standardised objective, as stock
            (added to the kernel's diagonal); raise it for noisy objectives. Defaults to 1e-4.
        beta: exploration weight of the confidence bound, as stock. Defaults to 2.6.

    Example:

    ```python
    import keras_tuner
    from tuner_service.oracles import FastBayesianOptimizationOracle

    oracle = FastBayesianOptimizationOracle(
        objective=keras_tuner.Objective("val_accuracy", "max"), max_trials=100, seed=1
    )
    tuner = keras_tuner.Tuner(oracle=oracle, hypermodel=build_model, directory="runs")
    ```
    """

    # Search effort per decision (about 1,400 candidates scored, plus hill-climbing). Scoring the
    # whole 18,522-point MLP grid instead did not lower regret (docs/oracle.md).
    num_random_candidates = 1024
    num_local_bases = 5
    perturbations_per_base = 40
    refine_top = 5
    refine_rounds = 3
    enumerate_limit = 2048  # score every grid point when the discrete grid is this small
    fit_iterations = 40
    # One length scale per hyperparameter (ARD) or one for all (as stock). Shared measured
    # better on the seed's spaces at 30-60 trials (docs/oracle.md): ARD overfits few points.
    ard = False
    # Cluster scale (docs/oracle.md, "1,000 trials"). The model is trained on at most
    # ``max_model_points`` completed trials: the ``model_best_points`` best ones (where the
    # acquisition looks) plus a seeded random sample of the others (the global shape). Below
    # the cap every completed trial is used, exactly as before. Cholesky and scoring cost grow
    # with the square and cube of the training set: 990 points cost 170 ms a decision, 160 ~10.
    max_model_points = 160
    model_best_points = 80
    # Pending trials entered into the model as kriging believers, and kept at a distance (see
    # _maximise_acquisition): the most recently started ones. Every trial, pending ones
    # included, is still excluded exactly from the proposals.
    max_pending_points = 32
    # Kernel refits run on a background thread and decisions use the latest finished fit, so
    # no request waits for one. False fits inline (deterministic: the proposals depend only on
    # the seed and the history; ``wait_for_refit`` gives the same from a sequential caller).
    refit_in_background = True
    # Many workers (at least ``batch_min_pending`` trials pending): one model evaluation yields
    # up to ``batch_size`` proposals, the best candidate and runners-up kept apart from each
    # other, handed out one per CreateTrial while fewer than ``batch_staleness`` of the completed
    # trials (at least 1) have arrived since. 256 workers with 5-s trials ask ~50 times a second;
    # a full decision each time would keep the chief's lock busy. Few workers: every decision
    # is a full one, as before.
    batch_size = 16
    batch_min_pending = 8
    batch_staleness = 0.02

    def __init__(
        self,
        objective=None,
        max_trials=10,
        num_initial_points=None,
        alpha=1e-4,
        beta=2.6,
        seed=None,
        hyperparameters=None,
        allow_new_entries=True,
        tune_new_entries=True,
        max_retries_per_trial=0,
        max_consecutive_failed_trials=3,
    ):
        super().__init__(
            objective=objective,
            max_trials=max_trials,
            hyperparameters=hyperparameters,
            tune_new_entries=tune_new_entries,
            allow_new_entries=allow_new_entries,
            seed=seed,
            max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials,
        )
        self.num_initial_points = num_initial_points
        self.alpha = alpha
        self.beta = beta
        self._fit: dict[str, Any] | None = None  # JSON-able: names, theta, fitted_at
        self._codec: SpaceCodec | None = None
        self._codec_signature: tuple | None = None
        self._encoded: dict[str, tuple[dict, np.ndarray, bytes]] = {}  # trial_id -> cache
        self._refits: BackgroundFit | None = None  # created on first use (not deep-copyable)
        self._batch: dict[str, Any] | None = None  # runners-up of the last model evaluation
        self.last_decision: dict[str, Any] = {}  # what the last populate_space did (for logs)

    # --- keras-tuner hooks -------------------------------------------------------------------

    @keras_tuner.synchronized
    def end_trial(self, trial):
        """keras-tuner's ``end_trial``, then the kernel refit if one is now due, in the background.

        Started here rather than by the next decision, so that it has all the time until then
        (and a sequential caller that waits for it gets what an inline fit would give).
        """
        result = super().end_trial(trial)
        if self.refit_in_background:
            self._start_due_refit()
        return result

    def _start_due_refit(self) -> None:
        completed = self._completed_trials()
        num_initial = self.num_initial_points or max(3 * len(self.hyperparameters.space), 3)
        codec = self._space_codec()
        if len(completed) < num_initial or codec.d == 0 or not self._refit_due(codec, len(completed)):
            return  # the cheap test first: this runs in every EndTrial
        _, _, X, y, _ = self._training_set(codec, completed)
        self._theta(codec, X, y, len(completed))  # starts the fit

    def populate_space(self, trial_id):
        """Proposes the next trial's values (called by ``create_trial``, under its lock)."""
        completed = self._completed_trials()
        num_initial = self.num_initial_points or max(3 * len(self.hyperparameters.space), 3)
        codec = self._space_codec()
        if len(completed) < num_initial or codec.d == 0:
            return self._random_response("random")
        with single_threaded_blas():
            values = self._propose(codec, completed, exclude_trial_id=trial_id)
        if values is None:  # the model found nothing new: fall back to the random sampler
            return self._random_response("random-fallback")
        return {"status": _RUNNING, "values": values}

    def get_state(self):
        state = super().get_state()
        state.update(
            {
                "num_initial_points": self.num_initial_points,
                "alpha": self.alpha,
                "beta": self.beta,
                "fast_bo": self._fit,
            }
        )
        return state

    def set_state(self, state):
        super().set_state(state)
        self.num_initial_points = state["num_initial_points"]
        self.alpha = state["alpha"]
        self.beta = state["beta"]
        self._fit = state.get("fast_bo")  # absent in a stock oracle's state: refit on demand
        self._codec = None
        self._codec_signature = None
        self._batch = None

    def wait_for_refit(self, timeout: float = 60.0) -> bool:
        """Block until no background kernel fit is running (True) or ``timeout`` passed (False).

        A sequential caller that calls this between trials gets proposals that depend only on
        the seed and the history, as with ``refit_in_background = False``.
        """
        return self._refits is None or self._refits.wait(timeout)

    def __getstate__(self):  # copy/deepcopy/pickle: threads and locks stay with the original
        state = self.__dict__.copy()
        state["_refits"] = None
        return state

    # --- the decision ------------------------------------------------------------------------

    def _random_response(self, how: str) -> dict[str, Any]:
        values = compat.random_values(self)
        self.last_decision = {"mode": how}
        if values is None:
            return {"status": _STOPPED, "values": None}
        return {"status": _RUNNING, "values": values}

    def _completed_trials(self) -> list:
        trials = []
        for trial_id in sorted(self.trials):  # sorted: identical order after a reload
            trial = self.trials[trial_id]
            if trial.status == _COMPLETED and trial.score is not None:
                if math.isfinite(trial.score):
                    trials.append(trial)
        return trials

    def _space_codec(self) -> SpaceCodec:
        signature = SpaceCodec.signature(self.hyperparameters)
        if self._codec is None or signature != self._codec_signature:
            self._codec = SpaceCodec(self.hyperparameters)
            self._codec_signature = signature
            self._encoded = {}
        return self._codec

    def _encode(self, codec: SpaceCodec, trial) -> tuple[np.ndarray, bytes]:
        """A trial's vector and duplicate key, cached while its values stay the same."""
        values = trial.hyperparameters.values
        hit = self._encoded.get(trial.trial_id)
        if hit is not None and hit[0] == values:
            return hit[1], hit[2]
        x = codec.encode(values)
        key = codec.keys(x[None, :])[0]
        self._encoded[trial.trial_id] = (dict(values), x, key)
        return x, key

    def _propose(self, codec: SpaceCodec, completed: list, exclude_trial_id) -> dict | None:
        encoded = {tid: self._encode(codec, t) for tid, t in self.trials.items()}  # once each
        running = [t for t in self.ongoing_trials.values() if t.trial_id != exclude_trial_id]
        P = np.array([encoded[t.trial_id][0] for t in running]).reshape(-1, codec.d)
        believers = P[-self.max_pending_points :] if self.max_pending_points > 0 else P[:0]
        tried = {key for _, key in encoded.values()}
        from_batch = self._take_from_batch(codec, len(completed), tried, len(P))
        if from_batch is not None:  # before any array work: most requests of a busy chief
            self.last_decision = {"mode": "batch", "pending": len(P), "completed": len(completed)}
            return codec.decode(from_batch)

        X_all, y_all, X, y, rng = self._training_set(codec, completed, encoded)

        theta, refitted, fitted_at = self._theta(codec, X, y, len(completed))
        posterior = Posterior(theta, *codec.gp_inputs(X), y, *codec.gp_inputs(believers), codec.cat_sizes)
        # Kept apart from: the same recent pending trials (all of them are excluded exactly, as
        # every trial is, through ``tried``); 255 pending made this test a third of a decision.
        best_x, ranked = self._maximise_acquisition(codec, posterior, X_all, y_all, tried, believers, rng)
        self._batch = None
        if best_x is not None and len(P) + 1 >= self.batch_min_pending and not codec.conditional:
            self._batch = {
                "completed": len(completed),
                "codec": codec,
                "points": self._spread(codec, best_x, ranked),
            }
        self.last_decision = {
            "mode": "model",
            "refitted": refitted,
            "fitted_at": fitted_at,
            "pending": len(P),
            "completed": len(X_all),
            "model_points": len(X) + len(believers),
        }
        if best_x is None:
            return None
        return codec.decode(best_x)

    def _training_set(self, codec: SpaceCodec, completed: list, encoded: dict | None = None):
        """All completed trials (minimised), the model's subset of them (standardised), the rng.

        The same history gives the same subset here and in ``end_trial``'s early refit.
        """
        if encoded is None:
            X_all = np.array([self._encode(codec, t)[0] for t in completed])
        else:
            X_all = np.array([encoded[t.trial_id][0] for t in completed])
        y_all = np.array([float(t.score) for t in completed])
        if self.objective.direction == "max":
            y_all = -y_all  # minimise throughout
        rng = np.random.default_rng([abs(int(self.seed)), len(self.trials)])
        keep = self._model_points(y_all, rng)
        return X_all, y_all, X_all[keep], self._standardise(y_all[keep]), rng

    def _take_from_batch(self, codec: SpaceCodec, n: int, tried: set, pending: int) -> np.ndarray | None:
        """The next runner-up of the last model evaluation, while it is recent enough."""
        batch = self._batch
        if batch is None or pending < self.batch_min_pending or batch["codec"] is not codec:
            return None
        if n - batch["completed"] > max(1, int(n * self.batch_staleness)):
            return None
        while batch["points"]:
            x = batch["points"].pop(0)
            if codec.keys(x[None, :])[0] not in tried:  # e.g. a retry took the same values
                return x
        return None

    def _spread(self, codec: SpaceCodec, best_x: np.ndarray, ranked: np.ndarray) -> list[np.ndarray]:
        """Up to ``batch_size - 1`` runners-up, best first, each far from the best and each other.

        "Far" is the pending-trial radius of ``_maximise_acquisition``; where too few
        candidates are that far apart, merely distinct ones fill the batch.
        """
        radius = max(1, (codec.d - 1) // 2)
        chosen = [best_x]
        for limit in (radius, 0):
            for x in ranked:
                if len(chosen) >= self.batch_size:
                    break
                if (np.stack(chosen) != x[None, :]).sum(axis=1).min() > limit:
                    chosen.append(x)
        return chosen[1:]

    def _model_points(self, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Indices of the completed trials the model is trained on (all of them below the cap)."""
        n = len(y)
        if n <= self.max_model_points:
            return np.arange(n)
        best_k = min(self.model_best_points, self.max_model_points)
        order = np.argsort(y, kind="stable")
        rest = rng.choice(order[best_k:], size=self.max_model_points - best_k, replace=False)
        return np.sort(np.concatenate([order[:best_k], rest]))

    @staticmethod
    def _standardise(y: np.ndarray) -> np.ndarray:
        std = float(y.std())
        return (y - float(y.mean())) / (std if std > 0 else 1.0)

    def _theta(
        self, codec: SpaceCodec, X: np.ndarray, y: np.ndarray, n: int
    ) -> tuple[Theta, bool, int | None]:
        """The latest kernel fit, and whether a refit was started; ``n`` = completed trials.

        A refit is due when the completed trials have grown by ~10% (at least 2) since the last
        one. In the background it runs on a snapshot of this decision's training set while this
        and later decisions use the fit before it (the default kernel before the first fit).
        """
        fit = self._fit  # one read: a background fit may replace it at any moment
        cached = self._cached_theta(codec, fit)
        if cached is not None:
            fitted_at = fit["fitted_at"]
            same_dims = list(fit["names"]) == codec.names
            if same_dims and n < fitted_at + max(2, fitted_at // 10):  # as _refit_due
                return cached, False, fitted_at
        starts = [Theta.default(codec.d, self.alpha)]
        if cached is not None:
            starts.insert(0, cached)
        job = self._fit_job(codec.names, *codec.gp_inputs(X), y.copy(), starts, n)
        if not self.refit_in_background:
            job()
            return self._cached_theta(codec, self._fit), True, n
        if self._refits is None:
            self._refits = BackgroundFit()
        started = self._refits.start(job)
        if cached is None:
            return Theta.default(codec.d, self.alpha), started, None
        return cached, started, fit["fitted_at"]

    def _refit_due(self, codec: SpaceCodec, n: int) -> bool:
        fit = self._fit
        if fit is None or list(fit["names"]) != codec.names:
            return True
        return n >= fit["fitted_at"] + max(2, fit["fitted_at"] // 10)

    def _cached_theta(self, codec: SpaceCodec, fit: dict[str, Any] | None) -> Theta | None:
        """A stored fit as kernel hyperparameters for today's dimensions (new ones: default)."""
        if fit is None:
            return None
        by_name = dict(zip(fit["names"], fit["log_ls"], strict=True))
        log_ls = np.array([by_name.get(name, 0.0) for name in codec.names])
        return Theta(log_ls, fit["log_s2"], math.log(max(self.alpha, 1e-10)))

    def _fit_job(self, names, ordinal, cat, y, starts, n):
        """A closure that fits the kernel on this data and publishes it as ``self._fit``."""
        names = list(names)

        def job() -> None:
            theta = fit_theta(
                ordinal,
                cat,
                y,
                starts,
                noise=self.alpha,
                max_iter=self.fit_iterations,
                shared_lengthscale=not self.ard,
            )
            current = self._fit
            if current is not None and current["fitted_at"] > n and current["names"] == names:
                return  # a newer fit landed first (e.g. after set_state)
            self._fit = {  # one assignment: readers see the old fit or the new one, never half
                "names": names,
                "log_ls": [float(v) for v in theta.log_ls],
                "log_s2": theta.log_s2,
                "log_n2": theta.log_n2,
                "fitted_at": n,
            }

        return job

    def _maximise_acquisition(self, codec, posterior, X, y, tried, P, rng):
        """The untried grid point with the lowest ``mu - beta * sigma`` that we can find.

        With trials pending (``P``), points that differ from one of them in at most
        ``(d - 1) // 2`` coordinates (at least 1) are dropped too, or, if that leaves nothing, at
        most 1; concurrent workers should explore different places, not the neighbours of what
        is already running. (Kriging believers alone left 1-in-4 proposals on the seed's MLP
        space one *model* hyperparameter from a running trial: the other differences were in
        units of layers the model does not have.)
        """

        def fresh(C, exclude=()):
            """Snapped, de-duplicated, and none of them tried already (nor in ``exclude``)."""
            C = codec.snap(C)
            seen = set(tried)
            seen.update(codec.keys(exclude) if len(exclude) else ())
            keep = []
            for i, key in enumerate(codec.keys(C)):
                if key not in seen:
                    seen.add(key)
                    keep.append(i)
            C = C[keep]
            if len(P) and len(C):
                apart = (C[:, None, :] != P[None, :, :]).sum(axis=2).min(axis=1)
                for radius in (max(1, (codec.d - 1) // 2), 1):
                    far = apart > radius
                    if far.any():
                        C = C[far]
                        break
            return C

        def score(C):
            mu, sd = posterior.predict(*codec.gp_inputs(C))
            return mu - self.beta * sd

        enumerated = codec.grid_size <= self.enumerate_limit
        if enumerated:
            C = fresh(codec.enumerate_grid())
        else:
            bases = X[np.argsort(y)[: self.num_local_bases]]
            C = fresh(
                np.vstack(
                    [
                        codec.sample(rng, self.num_random_candidates),
                        codec.neighbours(bases),
                        codec.perturb(bases, rng, self.perturbations_per_base),
                    ]
                )
            )
        if len(C) == 0:
            return None, C
        acq = score(C)
        # Hill-climb on the grid from the best few candidates.
        order = np.argsort(acq)[: self.refine_top]
        pool, pool_acq = C[order], acq[order]
        best_x, best_acq = pool[0], pool_acq[0]
        for _ in range(0 if enumerated else self.refine_rounds):
            N = fresh(codec.neighbours(pool), exclude=pool)
            if len(N) == 0:
                break
            n_acq = score(N)
            merged = np.vstack([pool, N])
            merged_acq = np.concatenate([pool_acq, n_acq])
            top = np.argsort(merged_acq)[: self.refine_top]
            if merged_acq[top[0]] >= best_acq:
                break
            pool, pool_acq = merged[top], merged_acq[top]
            best_x, best_acq = pool[0], pool_acq[0]
        if codec.conditional:
            return self._first_fresh_canonical(codec, pool, pool_acq, tried, score), C[:0]
        ranked = C[np.argsort(acq)[: 16 * self.batch_size]]  # the batch's runners-up come from these
        return best_x, ranked

    @staticmethod
    def _first_fresh_canonical(codec, pool, pool_acq, tried, score):
        """In conditional spaces, inactive coordinates are reset before the duplicate check."""
        canon = np.array([codec.canonical(x) for x in pool])
        acq = score(canon)
        for i in np.argsort(acq):
            if codec.keys(canon[i : i + 1])[0] not in tried:
                return canon[i]
        return None
