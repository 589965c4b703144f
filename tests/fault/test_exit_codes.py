"""Exit codes through the real CLI (``python -m tuner_service worker|chief``): what a Kubernetes
podFailurePolicy keys on. Worker 3: the chief stayed unreachable (ignored by the chart's policy:
not the worker's fault); worker 2: bad input, including a GPU required and none visible; chief 143:
stopped by SIGTERM (at once, even with a metrics linger)."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest

from tests.helpers import cli, free_port, tiny_study
from tuner_service import process


def _worker_env(**extra: str) -> dict[str, str]:
    return {
        process.TUNER_ID: "worker-0",
        process.ORACLE_IP: "127.0.0.1",
        process.ORACLE_PORT: str(free_port()),  # nobody listens there
        **extra,
    }


@pytest.mark.e2e
def test_worker_exits_3_when_the_chief_stays_unreachable(tmp_path: Path, keras_home: Path) -> None:
    study = tiny_study(tmp_path, chief_deadline=1)
    result = cli("worker", "--config", str(study), env=_worker_env(), timeout=180)
    assert result.returncode == process.EXIT_CHIEF_UNREACHABLE == 3, result.stderr[-3000:]
    assert re.search(
        r"worker worker-0: giving up: chief at 127\.0\.0\.1:\d+ unreachable for 1s", result.stderr
    )
    assert "Traceback" not in result.stderr


@pytest.mark.e2e
def test_worker_that_requires_a_gpu_and_sees_none_exits_2_before_loading_data(
    tmp_path: Path, keras_home: Path
) -> None:
    env = _worker_env(**{process.REQUIRE_GPU: "1", "CUDA_VISIBLE_DEVICES": ""})  # no GPU, even on a GPU host
    result = cli("worker", "--config", str(tiny_study(tmp_path)), env=env, timeout=180)
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "tuner-service worker: TUNER_SERVICE_REQUIRE_GPU=1 but no GPU is visible to tensorflow"
    ), last
    assert "Traceback" not in result.stderr
    assert not re.search(r"worker worker-0: data ", result.stderr)  # it stopped before the data


@pytest.mark.e2e
def test_require_gpu_takes_1_or_0(tmp_path: Path) -> None:
    env = _worker_env(**{process.REQUIRE_GPU: "yes please"})
    result = cli("worker", "--config", str(tiny_study(tmp_path)), env=env, timeout=120)
    assert result.returncode == 2
    assert "TUNER_SERVICE_REQUIRE_GPU='yes please': expected 1 or 0" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.e2e
def test_chief_stopped_by_sigterm_exits_143_at_once_despite_the_metrics_linger(
    tmp_path: Path, keras_home: Path
) -> None:
    """The linger is for a last scrape after a search that ended by itself; a SIGTERMed chief
    (a drained node, its grace period running) saves its state and exits 128 + 15 at once."""
    from tests.fault.fault_harness import Search, write_study

    s = Search(tmp_path, write_study(tmp_path))
    env = {process.METRICS_PORT: str(free_port()), process.METRICS_LINGER: "120"}
    try:
        s.start("chief", "chief", "chief", env)
        s.wait_until("the chief serving", lambda: s.ledger().get("state") == "running", timeout=120)
        s.procs["chief"].send_signal(signal.SIGTERM)
        signalled_at = time.monotonic()
        assert s.wait_exit("chief", 60) == 143, s.chief_log()[-3000:]
        assert time.monotonic() - signalled_at < 30  # not the 120 s linger
        assert s.ledger()["state"] == "interrupted"
    finally:
        s.kill_all()
