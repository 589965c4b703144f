"""Kernel refits off the request path, and one BLAS thread while the oracle computes.

:class:`BackgroundFit` runs one job at a time on a daemon thread: the oracle hands it a
snapshot of its training data and a function that fits the kernel and stores the result; the
decision that asked for it does not wait, and later decisions use whatever fit finished last.
Nothing here holds the oracle's (or the chief's) lock, so no RPC ever waits for a fit.

Example::

    >>> fits = BackgroundFit()
    >>> results = []
    >>> fits.start(lambda: results.append("fitted"))
    True
    >>> fits.wait(timeout=5.0), results
    (True, ['fitted'])
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

try:  # ships with scikit-learn; optional here
    from threadpoolctl import ThreadpoolController
except ImportError:  # pragma: no cover
    ThreadpoolController = None

log = logging.getLogger(__name__)


class BackgroundFit:
    """At most one fit running at a time, on a daemon thread (a chief never waits for it at exit)."""

    def __init__(self, name: str = "bo-refit"):
        self.name = name
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self.fits_done = 0  # how many jobs have finished (for tests and logs)

    @property
    def busy(self) -> bool:
        return not self._idle.is_set()

    def start(self, job: Callable[[], None]) -> bool:
        """Run ``job`` in the background unless a job is already running; True if started."""
        with self._lock:
            if not self._idle.is_set():
                return False
            self._idle.clear()
        threading.Thread(target=self._run, args=(job,), name=self.name, daemon=True).start()
        return True

    def _run(self, job: Callable[[], None]) -> None:
        try:
            with single_threaded_blas():
                job()
        except Exception:  # a failed fit leaves the previous model in use; never kill the chief
            log.exception("background kernel fit failed; the previous fit stays in use")
        finally:
            self.fits_done += 1
            self._idle.set()

    def wait(self, timeout: float) -> bool:
        """Block until no job is running (True) or ``timeout`` seconds passed (False)."""
        return self._idle.wait(timeout)


_blas_lock = threading.Lock()
_blas_users = 0
_blas_limiter = None
_blas_controller = None


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Runs NumPy's BLAS on one thread while any decision or fit is in progress.

    Our matrices are at most a few hundred wide: threading them buys nothing, and on a busy
    2-core machine OpenBLAS threads spin-waiting for each other made a 100x100 solve take 30 ms
    instead of 0.1 ms (docs/oracle.md). The limit is process-wide, so it is reference-counted:
    a decision and a background fit overlap, and the last one out restores the original
    setting. Without threadpoolctl this is a no-op; set OPENBLAS_NUM_THREADS=1 instead.
    """
    global _blas_users, _blas_limiter, _blas_controller
    if ThreadpoolController is None:
        yield
        return
    with _blas_lock:
        if _blas_users == 0:
            if _blas_controller is None:
                _blas_controller = ThreadpoolController()
            _blas_limiter = _blas_controller.limit(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0 and _blas_limiter is not None:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None
