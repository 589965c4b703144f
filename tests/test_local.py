"""The local runner's pieces that need no search: ports, signals, log lines, hints, TF noise."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tuner_service import local, quiet
from tuner_service.ports import check_free, free_port
from tuner_service.process import UsageError


def test_a_busy_port_is_named_and_a_free_one_passes() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(
            UsageError, match=rf"^status_port {port} on 127.0.0.1 is busy \(.+\); pick another$"
        ):
            check_free("127.0.0.1", {"metrics_port": 0, "status_port": port}, hint="pick another")
    check_free("127.0.0.1", {"metrics_port": free_port(), "status_port": 0})  # 0: nothing to check


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_run_like_ctrl_c(sig: int) -> None:
    before = signal.getsignal(sig)
    with pytest.raises(local.Stopped) as stopped, local._signals_stop_us():
        os.kill(os.getpid(), sig)  # the handler runs before the next line
        pytest.fail("not stopped")
    assert stopped.value.signum == sig
    assert signal.getsignal(sig) is before  # restored


def test_last_error_line_skips_info_lines(tmp_path: Path) -> None:
    log = tmp_path / "worker-0.log"
    log.write_text(
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\n'
        "OSError: the data cannot be read\n"
        "2026-12-01 05:30:27,897 INFO tuner_service.worker: worker worker-0: exiting\n\n"
    )
    assert local.last_error_line(log) == "OSError: the data cannot be read"
    assert local.last_error_line(tmp_path / "missing.log") == ""


def test_watch_hint_names_the_same_study() -> None:
    hint = local.watch_command("my study.yaml", ["name=demo 2", "max_trials=3"])
    assert (
        hint == "tuner-service status --config 'my study.yaml' --set 'name=demo 2' --set max_trials=3 --watch"
    )


NOISE = [  # what importing TensorFlow 2.21 writes on a machine without a GPU
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796102411.427285   19314 port.cc:153] oneDNN custom operations are on.",
    "E0000 00:00:1796102418.281049   19314 cuda_platform.cc:52] failed call to cuInit",
]


def test_tensorflow_start_up_noise_is_filtered_and_the_rest_kept() -> None:
    code = (
        "import os, sys\n"
        "from tuner_service import quiet\n"
        "with quiet.stderr_filtered():\n"
        "    for line in sys.argv[1:]:\n"
        "        os.write(2, line.encode() + b'\\n')\n"
        "    print('a real warning', file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, *NOISE], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "a real warning\n"


def test_quiet_settings_reach_children_and_verbose_keeps_them() -> None:
    env: dict[str, str] = {}
    quiet.configure(False, env)
    assert env["TF_CPP_MIN_LOG_LEVEL"] == "3"
    env = {}
    quiet.configure(True, env)
    assert env["TF_CPP_MIN_LOG_LEVEL"] == "0"


def test_a_second_signal_does_not_cut_the_ordered_stop_short() -> None:
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    before = {sig: signal.getsignal(sig) for sig in sigs}  # SIGINT: ignored when pytest runs as `&`
    with local._signals_stop_us(ignore=True):
        for sig in sigs:
            os.kill(os.getpid(), sig)  # ignored: the process lives on
    assert {sig: signal.getsignal(sig) for sig in sigs} == before  # each handler given back
