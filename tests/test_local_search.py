"""End to end: `tuner-service run` with a real chief and real workers on loopback gRPC."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import pytest

from tests.helpers import as_in_a_terminal, cli, tiny_study

pytestmark = pytest.mark.e2e


def _results(tmp_path: Path, name: str = "tiny") -> dict:
    return json.loads((tmp_path / "studies" / name / "results.json").read_text())


def test_two_workers_share_a_search_and_results_are_complete(tmp_path: Path) -> None:
    study = tiny_study(
        tmp_path,
        max_trials=6,
        epochs=2,
        retrain_best=True,
        baseline=True,
        tuner={"type": "bayesian", "num_initial_points": 2},
    )
    result = cli("run", "--config", str(study), "--workers", "2", "--no-progress", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    res = _results(tmp_path)

    trials = res["trials"]
    assert len(trials) == 6 and all(t["status"] == "COMPLETED" for t in trials)
    assert {t["tuner_id"] for t in trials} == {"worker-0", "worker-1"}
    assert all(t["duration"] > 0 and t["score"] is not None for t in trials)
    assert len({t["trial_id"] for t in trials}) == 6

    best = max(trials, key=lambda t: t["score"])
    assert res["best_val_score"] == pytest.approx(best["score"])
    assert res["best_hyperparameters"] == best["hyperparameters"]
    assert set(res["best_hyperparameters"]) >= {
        "n_layers",
        "units_0",
        "dropout",
        "optimizer",
        "learning_rate",
    }
    assert 0.0 < res["test_accuracy"] <= 1.0
    assert 0.0 < res["baseline_test_accuracy"] <= 1.0

    model = keras.models.load_model(res["best_model"])
    assert model.output_shape == (None, 10)

    table = cli("results", "--config", str(study), timeout=120)
    assert table.returncode == 0 and "worker-1" in table.stdout
    as_json = cli("results", "--config", str(study), "--json", timeout=120)
    assert json.loads(as_json.stdout)["best_trial_id"] == res["best_trial_id"]


def test_user_hypermodel_by_module_attr(tmp_path: Path) -> None:
    study = tiny_study(tmp_path, model="tests.fixtures.user_models:build_tiny", max_trials=2)
    result = cli("run", "--config", str(study), "--workers", "1", "--no-progress", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    res = _results(tmp_path)
    assert res["trials_completed"] == 2
    assert set(res["best_hyperparameters"]) == {"width"}
    assert "baseline_test_accuracy" not in res


def test_bad_user_model_exits_2_before_any_process_starts(tmp_path: Path) -> None:
    study = tiny_study(tmp_path, model="tests.fixtures.user_models:missing")
    result = cli("run", "--config", str(study), "--workers", "1", "--no-progress", timeout=300)
    assert result.returncode == 2
    assert "has no attribute 'missing'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "studies").exists()


def test_chief_with_a_bad_model_exits_2(tmp_path: Path) -> None:
    study = tiny_study(tmp_path, model="tests.fixtures.user_models:NOT_A_MODEL")
    env = {"KERASTUNER_TUNER_ID": "chief", "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": "1"}
    result = cli("chief", "--config", str(study), env=env, timeout=300)
    assert result.returncode == 2
    assert "expected a keras_tuner.HyperModel" in result.stderr
    assert "Traceback" not in result.stderr


def test_hyperband_search_runs_distributed(tmp_path: Path) -> None:
    study = tiny_study(tmp_path, tuner={"type": "hyperband", "max_epochs": 2, "factor": 2}, epochs=2)
    result = cli("run", "--config", str(study), "--workers", "2", "--no-progress", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    res = _results(tmp_path)
    assert res["tuner"] == "hyperband" and res["trials_completed"] >= 2
    assert all("tuner/epochs" in t["hyperparameters"] for t in res["trials"])
    # The chief's budget is what Hyperband's brackets plan (2 + 2 + 1 trials here), so progress
    # and the trials_max series work for Hyperband too; two workers may run out of new values.
    ledger = json.loads((tmp_path / "studies" / "tiny" / "service_state.json").read_text())
    assert ledger["max_trials"] == 5 and res["trials_completed"] <= 5


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().decode(errors="replace"):
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return pids


def test_ctrl_c_stops_every_process_and_the_chief_saves_its_state(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from tuner_service.study.ledger import read_snapshot

    study = tiny_study(tmp_path, max_trials=40, epochs=3)
    proc = subprocess.Popen(
        as_in_a_terminal(
            [sys.executable, "-m", "tuner_service", "run", "--config", str(study)]
            + ["--workers", "2", "--no-progress"]
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    project = tmp_path / "studies" / "tiny"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        snap = read_snapshot(project)
        if snap and snap["counts"].get("COMPLETED", 0) >= 1:
            break
        time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("no trial completed in time")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err
    assert _processes_mentioning(str(study)) == []
    snap = read_snapshot(project)
    assert snap["state"] == "interrupted"
    assert (project / "oracle.json").exists()


def test_a_loss_objective_is_minimised_end_to_end(tmp_path: Path) -> None:
    """``objective: val_loss``: the best trial is the LOWEST score in results.json, the chief's
    saved state and `status` (a maximised loss would pick the worst trial everywhere)."""
    study = tiny_study(tmp_path, objective="val_loss", max_trials=3, seed=5)
    result = cli("run", "--config", str(study), "--workers", "1", "--no-progress", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    res = _results(tmp_path)
    scores = {t["trial_id"]: t["score"] for t in res["trials"] if t["status"] == "COMPLETED"}
    assert len(scores) == 3 and len(set(scores.values())) == 3, scores  # distinct, so the test can tell
    lowest = min(scores, key=scores.get)
    assert res["best_trial_id"] == lowest and res["best_val_score"] == pytest.approx(scores[lowest])

    state = json.loads((tmp_path / "studies" / "tiny" / "service_state.json").read_text())
    assert state["best_trial_id"] == lowest and state["best_score"] == pytest.approx(scores[lowest])
    status = cli("status", "--config", str(study), "--json", timeout=120)
    assert status.returncode == 0, status.stderr[-2000:]
    best = json.loads(status.stdout)["status"]["best"]
    assert best["trial_id"] == lowest and best["score"] == pytest.approx(scores[lowest])


# -- the study's ports, a finished study, TensorFlow's noise (issue 15) ------------------------
def _imports_tensorflow(stderr: str) -> bool:
    """From ``python -X importtime`` output: whether TensorFlow was imported."""
    return any(line.rstrip().endswith("| tensorflow") for line in stderr.splitlines())


def test_busy_ports_are_named_before_tensorflow_loads_and_nothing_is_written(tmp_path: Path) -> None:
    import os
    import socket
    import subprocess
    import sys

    from tests.helpers import REPO

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-X", "importtime", "-m", "tuner_service", *args]
        env = {**os.environ, **(env or {})}
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=REPO, env=env)

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        study = tiny_study(tmp_path, metrics_port=port)
        result = run("run", "--config", str(study), "--workers", "1")
        assert result.returncode == 2, result.stderr[-2000:]
        assert f"tuner-service run: metrics_port {port} on 127.0.0.1 is busy (Address already in use)" in (
            result.stderr
        )
        assert not _imports_tensorflow(result.stderr)

        study = tiny_study(tmp_path, status_port=port)
        env = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(port)}
        result = run("chief", "--config", str(study), env=env)
        assert result.returncode == 2, result.stderr[-2000:]
        expected = (
            f"KERASTUNER_ORACLE_PORT {port} on 127.0.0.1 is busy (Address already in use); status_port {port}"
        )
        assert expected in result.stderr
        assert not _imports_tensorflow(result.stderr)
    assert not (tmp_path / "studies").exists()


def _no_tensorflow_noise(text: str) -> None:
    for noise in ("absl::InitializeLog", "I0000 ", "E0000 ", "oneDNN custom operations", "cuInit"):
        assert noise not in text, f"{noise!r} in:\n{text[-2000:]}"


def test_run_serves_the_studys_ports_and_a_finished_study_is_rerun_only_on_purpose(tmp_path: Path) -> None:
    import shlex
    import subprocess
    import sys
    import time
    import urllib.request

    from tests.helpers import REPO, free_port

    metrics_port, status_port = free_port(), free_port()
    study = tiny_study(tmp_path, max_trials=2, epochs=2, metrics_port=metrics_port, status_port=status_port)
    project = tmp_path / "studies" / "demo-1"
    argv = [sys.executable, "-m", "tuner_service", "run", "--config", str(study), "--workers", "1"]
    argv += ["--no-progress", "--set", "name=demo-1"]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    scraped = ""
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline and "tuner_service_trials" not in scraped:
        try:
            with urllib.request.urlopen(f"http://localhost:{metrics_port}/metrics", timeout=2) as answer:
                scraped = answer.read().decode()
        except OSError:
            time.sleep(0.2)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    assert 'tuner_service_trials_max{study="demo-1"} 2.0' in scraped  # the README's curl works
    assert f"metrics: http://127.0.0.1:{metrics_port}/metrics" in out
    watch = shlex.join(["tuner-service", "status", "--config", str(study), "--set", "name=demo-1", "--watch"])
    assert f"status:  127.0.0.1:{status_port}; watch it: {watch}" in out
    _no_tensorflow_noise(err)
    for log in (project / "logs").glob("*.log"):
        _no_tensorflow_noise(log.read_text())
        assert "Running Trial #" not in log.read_text()  # keras-tuner's 1-based count is off

    # Run again: nothing is touched, the results are shown.
    state = (project / "service_state.json").read_bytes()
    logs = {p.name: p.read_bytes() for p in (project / "logs").glob("*.log")}
    again = cli("run", "--config", str(study), "--set", "name=demo-1", "--no-progress", timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "study 'demo-1' is finished: 2 trials completed, best val_accuracy " in again.stdout
    assert "To start over: --fresh, or --set max_trials=N (N > 2)." in again.stdout
    assert "trials completed" in again.stdout and "worker-0" in again.stdout  # the results table
    assert (project / "service_state.json").read_bytes() == state
    assert {p.name: p.read_bytes() for p in (project / "logs").glob("*.log")} == logs

    # Extend it on purpose: the oracle goes on, the ledger keeps its workers' records.
    more = cli(
        "run", "--config", str(study), "--set", "name=demo-1", "--set", "max_trials=3", "--workers", "1"
    )
    assert more.returncode == 0, more.stderr[-3000:]
    assert "study 'demo-1': extending the finished search to 3 trials" in more.stdout
    ledger = json.loads((project / "service_state.json").read_text())
    assert ledger["counts"] == {"COMPLETED": 3} and ledger["max_trials"] == 3
    assert ledger["workers"]["worker-0"]["trials_completed"] == 3
    assert _results(tmp_path, "demo-1")["trials_completed"] == 3

    # --fresh: refused while a chief serves the study, then starts over.
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "tuner_service"])
    try:
        (project / "endpoints.json").write_text(json.dumps({"pid": sleeper.pid, "host": "127.0.0.1"}))
        refused = cli("run", "--config", str(study), "--set", "name=demo-1", "--fresh", timeout=60)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert f"--fresh: a chief (pid {sleeper.pid}) is running on {project}; stop it first" in refused.stderr
    assert (project / "service_state.json").exists()
    fresh = cli("run", "--config", str(study), "--set", "name=demo-1", "--set", "max_trials=1", "--fresh")
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert f"study 'demo-1': removed {project} (--fresh)" in fresh.stdout
    assert json.loads((project / "service_state.json").read_text())["counts"] == {"COMPLETED": 1}
