"""The chief's metrics/status wiring rejects bad settings with one line and exit code 2."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.helpers import cli, free_port, tiny_study


def test_chief_with_a_busy_metrics_port_is_a_usage_error(tmp_path: Path, keras_home: Path) -> None:
    study = tiny_study(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        env = {
            "KERASTUNER_ORACLE_IP": "127.0.0.1",
            "KERASTUNER_ORACLE_PORT": str(free_port()),
            "TUNER_SERVICE_METRICS_PORT": str(busy.getsockname()[1]),
        }
        result = cli("chief", "--config", str(study), env=env, timeout=180)
    assert result.returncode == 2, result.stderr[-2000:]
    busy_port = env["TUNER_SERVICE_METRICS_PORT"]
    assert f"metrics_port {busy_port} on 127.0.0.1 is busy (Address already in use)" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "studies").exists()  # checked before anything is written


def test_bad_linger_is_a_usage_error(tmp_path: Path, keras_home: Path) -> None:
    study = tiny_study(tmp_path)
    env = {
        "KERASTUNER_ORACLE_IP": "127.0.0.1",
        "KERASTUNER_ORACLE_PORT": str(free_port()),
        "TUNER_SERVICE_METRICS_PORT": str(free_port()),
        "TUNER_SERVICE_METRICS_LINGER": "soon",
    }
    result = cli("chief", "--config", str(study), env=env, timeout=180)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "TUNER_SERVICE_METRICS_LINGER='soon': expected seconds" in result.stderr
