"""A small Gaussian process in NumPy: Matern-5/2 with one length scale per hyperparameter.

Why not scikit-learn's (what stock keras-tuner uses)? Its fit restarts the optimizer 20 times from
scratch on every decision and its prediction is called point by point from scipy's L-BFGS-B. Here
the kernel hyperparameters are fitted by a short BFGS with analytic gradients, warm-started from
the previous fit, and only every few trials (the caller decides); prediction is batched over
thousands of candidates with two matrix products. No SciPy needed.

Inputs are split in two blocks (see ``SpaceCodec.gp_inputs``): ordinal coordinates in ``[0, 1]``
whose squared distance is ``(a - b)^2``, and categorical indices whose squared distance is
``[a != b]``. With ``r^2 = sum_h dist_h / l_h^2`` the kernel is
``k = s2 * (1 + sqrt5 r + 5/3 r^2) exp(-sqrt5 r)``, plus ``n2`` on the diagonal (noise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_SQRT5 = math.sqrt(5.0)
_JITTER = 1e-8

# Box and weak priors (log space) for the MAP fit; targets are standardised.
_LOG_LS_BOUNDS = (math.log(0.02), math.log(50.0))
_LOG_S2_BOUNDS = (math.log(0.05), math.log(20.0))
_LOG_LS_PRIOR = (0.0, 1.5)  # mean, sd
_LOG_S2_PRIOR = (0.0, 1.5)


@dataclass(frozen=True)
class Theta:
    """Kernel hyperparameters, in log space: length scales (one per dim), signal, noise."""

    log_ls: np.ndarray
    log_s2: float
    log_n2: float

    def vector(self) -> np.ndarray:
        return np.concatenate([self.log_ls, [self.log_s2, self.log_n2]])

    @classmethod
    def from_vector(cls, v: np.ndarray) -> Theta:
        v = np.asarray(v, dtype=float)
        return cls(v[:-2].copy(), float(v[-2]), float(v[-1]))

    @classmethod
    def default(cls, d: int, noise: float) -> Theta:
        return cls(np.zeros(d), 0.0, math.log(max(noise, 1e-10)))


def _sqdist_per_dim(ord_a, cat_a, ord_b, cat_b) -> np.ndarray:
    """(n_a, n_b, d) per-dimension squared distances, ordinal dims first then categorical."""
    parts = []
    if ord_a.shape[1]:
        parts.append((ord_a[:, None, :] - ord_b[None, :, :]) ** 2)
    if cat_a.shape[1]:
        parts.append((cat_a[:, None, :] != cat_b[None, :, :]).astype(float))
    if not parts:
        return np.zeros((len(ord_a), len(ord_b), 0))
    return np.concatenate(parts, axis=2)


def _matern(r2: np.ndarray, s2: float) -> np.ndarray:
    # In place on temporaries: this runs on (candidates x training points) arrays every decision.
    r2 = np.maximum(r2, 0.0)
    k = np.sqrt(r2)
    k *= _SQRT5
    e = np.exp(-k)
    k += 1.0
    r2 *= 5.0 / 3.0
    k += r2
    k *= e
    k *= s2
    return k


def _cho_inverse(L: np.ndarray) -> np.ndarray:
    """Inverse of a lower-triangular Cholesky factor (n is at most a few hundred here)."""
    return np.linalg.solve(L, np.eye(len(L)))


def _neg_log_posterior(v, D, y, min_log_n2):
    """Negative log marginal likelihood plus log prior, and its gradient."""
    n, _, d = D.shape
    theta = Theta.from_vector(v)
    ls2 = np.exp(2.0 * theta.log_ls)
    s2, n2 = math.exp(theta.log_s2), math.exp(theta.log_n2)
    r2 = D @ (1.0 / ls2)
    r = np.sqrt(np.maximum(r2, 0.0))
    e = np.exp(-_SQRT5 * r)
    Kf = s2 * (1.0 + _SQRT5 * r + (5.0 / 3.0) * r2) * e
    K = Kf + (n2 + _JITTER) * np.eye(n)
    try:
        L = np.linalg.cholesky(K)
    except np.linalg.LinAlgError:
        return np.inf, np.zeros_like(v)
    Linv = _cho_inverse(L)
    alpha = Linv.T @ (Linv @ y)
    Kinv = Linv.T @ Linv
    nll = 0.5 * y @ alpha + np.log(np.diag(L)).sum() + 0.5 * n * math.log(2 * math.pi)
    W = np.outer(alpha, alpha) - Kinv  # d(LML)/dK = W / 2
    A = s2 * (5.0 / 3.0) * (1.0 + _SQRT5 * r) * e  # dK/dlog(l_h) = A * D_h / l_h^2
    g_ls = -0.5 * np.einsum("ij,ijh->h", W * A, D) / ls2
    g_s2 = -0.5 * np.sum(W * Kf)
    g_n2 = -0.5 * n2 * np.trace(W)
    grad = np.concatenate([g_ls, [g_s2, g_n2]])
    # Weak Gaussian priors in log space, and a soft wall outside the box.
    mu, sd = _LOG_LS_PRIOR
    nll += 0.5 * np.sum(((theta.log_ls - mu) / sd) ** 2)
    grad[:d] += (theta.log_ls - mu) / sd**2
    mu, sd = _LOG_S2_PRIOR
    nll += 0.5 * ((theta.log_s2 - mu) / sd) ** 2
    grad[d] += (theta.log_s2 - mu) / sd**2
    lo = np.concatenate([np.full(d, _LOG_LS_BOUNDS[0]), [_LOG_S2_BOUNDS[0], min_log_n2]])
    hi = np.concatenate([np.full(d, _LOG_LS_BOUNDS[1]), [_LOG_S2_BOUNDS[1], math.log(1.0)]])
    over, under = np.maximum(v - hi, 0.0), np.maximum(lo - v, 0.0)
    nll += 50.0 * float(np.sum(over**2 + under**2))
    grad += 100.0 * (over - under)
    return float(nll), grad


def _bfgs(f, x0, max_iter):
    """Plain BFGS with Armijo backtracking; good enough for ~10 smooth parameters."""
    x = np.asarray(x0, dtype=float)
    fx, g = f(x)
    if not np.isfinite(fx):
        return x, fx
    H = np.eye(len(x))
    for _ in range(max_iter):
        p = -H @ g
        if g @ p >= 0:  # not a descent direction: reset
            H = np.eye(len(x))
            p = -g
        step = 1.0
        # Cap the step so no log-parameter moves by more than 2 at once.
        pmax = np.max(np.abs(p))
        if pmax > 2.0:
            step = 2.0 / pmax
        while True:
            x_new = x + step * p
            f_new, g_new = f(x_new)
            if np.isfinite(f_new) and f_new <= fx + 1e-4 * step * (g @ p):
                break
            step *= 0.5
            if step < 1e-6:
                return x, fx
        s, yk = x_new - x, g_new - g
        x, fx, g = x_new, f_new, g_new
        if np.max(np.abs(g)) < 1e-4 or abs(s @ g) < 1e-9:
            break
        sy = s @ yk
        if sy > 1e-10:
            rho = 1.0 / sy
            eye = np.eye(len(x))
            H = (eye - rho * np.outer(s, yk)) @ H @ (eye - rho * np.outer(yk, s)) + rho * np.outer(s, s)
    return x, fx


def fit_theta(
    ordinal: np.ndarray,
    cat: np.ndarray,
    y: np.ndarray,
    starts: list[Theta],
    noise: float,
    max_iter: int = 40,
    shared_lengthscale: bool = True,
) -> Theta:
    """MAP length scale(s) and signal variance for standardised ``y``, best over ``starts``.

    The noise variance is not fitted: it is ``noise`` (the oracle's ``alpha``), as in stock.
    """
    D = _sqdist_per_dim(ordinal, cat, ordinal, cat)
    d = D.shape[2]
    log_n2 = math.log(max(noise, 1e-10))
    n_ls = 1 if shared_lengthscale else d

    def full(u):  # free parameters -> [log_ls (d), log_s2, log_n2]
        return np.concatenate([np.broadcast_to(u[:n_ls], (d,)), [u[n_ls], log_n2]])

    def objective(u):
        f, g = _neg_log_posterior(full(u), D, y, log_n2)
        g_ls = [g[:d].sum()] if shared_lengthscale else g[:d]
        return f, np.concatenate([g_ls, [g[d]]])

    best, best_f = None, np.inf
    for start in starts:
        ls0 = [start.log_ls.mean()] if shared_lengthscale else start.log_ls
        u, fu = _bfgs(objective, np.concatenate([ls0, [start.log_s2]]), max_iter)
        if fu < best_f:
            best, best_f = full(u), fu
    if best is None:
        return starts[0]
    lo = np.concatenate([np.full(d, _LOG_LS_BOUNDS[0]), [_LOG_S2_BOUNDS[0], log_n2]])
    hi = np.concatenate([np.full(d, _LOG_LS_BOUNDS[1]), [_LOG_S2_BOUNDS[1], log_n2]])
    return Theta.from_vector(np.clip(best, lo, hi))


class Posterior:
    """The GP conditioned on observed points, with pending points as kriging believers.

    Pending points are "observed" at the posterior mean: the mean is unchanged (the residual is
    zero) but the variance collapses at and around them, so a second worker is not sent to the
    same place while the first is still training there.
    """

    def __init__(self, theta: Theta, ordinal, cat, y, pend_ordinal, pend_cat, cat_sizes):
        self.theta = theta
        self.cat_sizes = list(cat_sizes)
        n_ord = ordinal.shape[1]
        ls = np.exp(theta.log_ls)
        self._ls_ord, self._ls_cat = ls[:n_ord], ls[n_ord:]
        self.s2 = math.exp(theta.log_s2)
        n2 = math.exp(theta.log_n2) + _JITTER
        self.n = len(y)
        F = self._features(np.vstack([ordinal, pend_ordinal]), np.vstack([cat, pend_cat]))
        self._F = F
        self._F_sq = np.sum(F * F, axis=1)
        K = _matern(self._r2(F, np.sum(F * F, axis=1)), self.s2) + n2 * np.eye(len(F))
        # One factorisation serves both: the leading block of the Cholesky factor (and of its
        # inverse) of observed + pending is that of the observed points alone.
        Linv = _cho_inverse(np.linalg.cholesky(K))
        # Mean from observed points only; variance from observed + pending points.
        Lo = Linv[: self.n, : self.n]
        self._alpha = Lo.T @ (Lo @ y)
        self._Linv = Linv

    def _features(self, ordinal, cat) -> np.ndarray:
        """Scaled coordinates whose squared Euclidean distance is ``r^2``."""
        parts = [ordinal / self._ls_ord]
        for j, size in enumerate(self.cat_sizes):
            onehot = np.zeros((len(cat), size))
            onehot[np.arange(len(cat)), cat[:, j]] = 1.0
            parts.append(onehot / (math.sqrt(2.0) * self._ls_cat[j]))
        return np.concatenate(parts, axis=1)

    def _r2(self, Fc, Fc_sq) -> np.ndarray:
        return np.maximum(Fc_sq[:, None] + self._F_sq[None, :] - 2.0 * Fc @ self._F.T, 0.0)

    def predict(self, ordinal, cat) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and latent standard deviation at many points at once."""
        Fc = self._features(ordinal, cat)
        Ks = _matern(self._r2(Fc, np.sum(Fc * Fc, axis=1)), self.s2)
        mu = Ks[:, : self.n] @ self._alpha
        V = Ks[:, : self._Linv.shape[0]] @ self._Linv.T
        var = np.maximum(self.s2 - np.sum(V * V, axis=1), 1e-12)
        return mu, np.sqrt(var)
