"""Early stopping: the rules, the chief's decisions over real gRPC, and real searches."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from tests.helpers import cli, tiny_study
from tuner_service import spec as spec_module
from tuner_service.stopping import (
    EarlyStopping,
    HalvingRule,
    MedianRule,
    make_rule,
    study_rule,
)
from tuner_service.study import files
from tuner_service.study.files import EARLY_STOPPING as STATE_FILE


def _finish(stop: EarlyStopping, trial_id: str, values: list[float]) -> None:
    for step, value in enumerate(values):
        stop.report(trial_id, step, value)
    stop.trial_ended(trial_id)


# -- rules -----------------------------------------------------------------------------------
def test_median_stops_a_trial_below_the_median_of_the_ended_trials_running_averages():
    stop = EarlyStopping(MedianRule(min_epochs=2, min_trials=3), "max")
    for i, curve in enumerate([[0.5, 0.6, 0.7], [0.6, 0.7, 0.8], [0.7, 0.8, 0.9]]):
        _finish(stop, f"t{i}", curve)
    assert stop.report("bad", 0, 0.1) is False  # min_epochs not reached yet
    assert stop.report("bad", 1, 0.2) is True  # 0.2 < median(0.55, 0.65, 0.75)
    assert stop.stopped == {"bad": 2}
    assert stop.report("bad", 2, 0.99) is True  # once stopped, always stopped
    assert stop.report("good", 0, 0.9) is False
    assert stop.report("good", 1, 0.6) is False  # best so far 0.9 beats the median


def test_median_compares_with_running_averages_not_values_at_that_epoch():
    # Vizier's formulation: a reference's mean over epochs 0..s, so one lucky (or unlucky)
    # epoch of a reference moves the bar less; here the references average 0.7 by epoch 1.
    stop = EarlyStopping(MedianRule(min_epochs=1, min_trials=3), "max")
    for i in range(3):
        _finish(stop, f"t{i}", [0.5, 0.9])
    assert stop.report("slow", 0, 0.5) is False  # 0.5 is not below median(0.5, 0.5, 0.5)
    assert stop.report("slow", 1, 0.75) is False  # 0.75 >= 0.7, although < 0.9 at this epoch
    assert stop.report("worse", 0, 0.5) is False
    assert stop.report("worse", 1, 0.65) is True


def test_median_waits_for_min_trials_and_counts_stopped_trials_as_references():
    stop = EarlyStopping(MedianRule(min_epochs=1, min_trials=2), "max")
    _finish(stop, "a", [0.8, 0.9])
    assert stop.report("b", 0, 0.1) is False  # only one ended trial to compare with
    stop.trial_ended("b")
    _finish(stop, "c", [0.6])
    assert stop.report("d", 0, 0.5) is True  # median(0.8, 0.1, 0.6) = 0.6
    stop2 = EarlyStopping(MedianRule(min_epochs=1, min_trials=1), "max")
    _finish(stop2, "a", [0.8])
    assert stop2.report("b", 0, 0.1) is True
    stop2.trial_ended("b")
    # b was stopped, but it ended and is a reference: median(0.8, 0.1) = 0.45. Leaving stopped
    # trials out would raise the bar with every stop (0.8 here) until good slow starters fail.
    assert stop2.report("c", 0, 0.5) is False


def test_min_direction_for_loss_objectives():
    stop = EarlyStopping(MedianRule(min_epochs=1, min_trials=1), "min")
    _finish(stop, "a", [1.0, 0.5])
    assert stop.report("high-loss", 0, 2.0) is True
    assert stop.report("low-loss", 0, 0.8) is False


def test_halving_keeps_the_top_third_at_each_rung():
    rule = HalvingRule(min_epochs=1, reduction_factor=3, min_trials=3)
    stop = EarlyStopping(rule, "max")
    assert [e for e in range(1, 10) if rule._is_rung(e)] == [1, 3, 9]
    for name, value in (("a", 0.9), ("b", 0.8)):
        assert stop.report(name, 0, value) is False  # fewer than min_trials values at rung 1
    assert stop.report("c", 0, 0.7) is True  # keeps the best 3 // 3 = 1
    assert stop.report("d", 0, 0.95) is False
    assert stop.report("a", 1, 0.91) is False  # epoch 2 is not a rung


def test_state_round_trips_through_json(tmp_path: Path):
    stop = EarlyStopping(MedianRule(min_epochs=1, min_trials=1), "max")
    _finish(stop, "a", [0.8])
    assert stop.report("b", 0, 0.1)
    stop.save(tmp_path)
    again = EarlyStopping(MedianRule(min_epochs=1, min_trials=1), "max")
    assert again.restore(tmp_path)
    assert again.get_state() == stop.get_state()
    assert again.report("c", 0, 0.2) is True  # the restored history still counts
    assert EarlyStopping(MedianRule(), "max").restore(tmp_path / "nowhere") is False


def test_forget_drops_a_retried_trial():
    stop = EarlyStopping(MedianRule(min_epochs=1, min_trials=1), "max")
    _finish(stop, "a", [0.8])
    assert stop.report("b", 0, 0.1)
    stop.forget("b")
    assert "b" not in stop.stopped


def test_unknown_rule_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown early-stopping rule 'nope'"):
        make_rule("nope")


# -- the study option --------------------------------------------------------------------------
def test_off_by_default_and_one_option_turns_it_on():
    base = ["name=s", "model=mlp"]
    assert spec_module.load(None, base).early_stopping is None
    on = spec_module.load(None, [*base, "early_stopping=median"]).early_stopping
    assert on is not None and on.rule == "median"
    assert study_rule(spec_module.load(None, [*base, "early_stopping=median"])) == MedianRule(
        min_epochs=1, min_trials=3
    )
    halving = study_rule(spec_module.load(None, [*base, "early_stopping.rule=halving"]))
    assert halving == HalvingRule(min_epochs=3, reduction_factor=3, min_trials=3)
    cautious = study_rule(spec_module.load(None, [*base, "early_stopping.min_epochs=4"]))
    assert cautious is not None and cautious.min_epochs == 4


def test_bad_early_stopping_option_exits_2_with_one_line(tmp_path: Path):
    study = tiny_study(tmp_path, early_stopping={"rule": "sometimes"})
    proc = cli("run", "-c", str(study), timeout=60)
    assert proc.returncode == 2
    assert "early_stopping.rule" in proc.stderr and "Traceback" not in proc.stderr


# -- the chief over real gRPC -------------------------------------------------------------------
@pytest.fixture
def chief(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A real Chief serving on a free port, with median stopping after 1 epoch and 1 trial."""
    for var in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        monkeypatch.delenv(var, raising=False)
    from tests.fixtures.stopping_models import learns_or_not
    from tuner_service.chief.chief import Chief
    from tuner_service.tuners import build_tuner

    spec = spec_module.load(
        tiny_study(
            tmp_path,
            model="tests.fixtures.stopping_models:learns_or_not",
            max_trials=10,
            epochs=3,
            early_stopping={"rule": "median", "min_epochs": 1, "min_trials": 1},
        )
    )
    tuner = build_tuner(spec, learns_or_not)
    c = Chief(spec, tuner.oracle, address="127.0.0.1:0", linger=0.1)
    c.start()
    yield c
    c.request_stop("test over")
    c.shutdown(c.wait())


def _trial(client, tuner_id: str = "worker-0"):
    return client.create_trial(tuner_id)


def test_chief_answers_stopped_to_a_per_epoch_report_and_the_trial_completes(chief, monkeypatch):
    import keras_tuner

    from tuner_service.client import ServiceOracleClient

    client = ServiceOracleClient(chief.oracle, f"127.0.0.1:{chief.port}", "worker-0")
    good = _trial(client)
    for epoch, acc in enumerate([0.6, 0.7, 0.8]):
        answer = client.report_progress(good.trial_id, {"val_accuracy": acc}, step=epoch)
        assert answer.status == "RUNNING"
    client.update_trial(good.trial_id, {"val_accuracy": 0.8}, step=2)  # keras-tuner's final report
    good.status = "COMPLETED"
    client.end_trial(good)

    bad = _trial(client)
    answer = client.report_progress(bad.trial_id, {"val_accuracy": 0.1}, step=0)
    assert answer.status == "STOPPED"
    assert client.get_trial(bad.trial_id).status == "RUNNING"  # only the answer says STOPPED
    # The worker stops training; keras-tuner reports the epochs it has and ends the trial.
    assert client.update_trial(bad.trial_id, {"val_accuracy": 0.1}, step=0).status == "RUNNING"
    bad.status = "COMPLETED"
    client.end_trial(bad)
    ended = client.get_trial(bad.trial_id)
    assert ended.status == "COMPLETED" and ended.score == pytest.approx(0.1)
    state = json.loads((chief.spec.project_dir / STATE_FILE).read_text())
    assert state["stopped"] == {bad.trial_id: 1}

    # A stock keras-tuner client sends only the unmarked end-of-trial report: never stopped.
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", str(chief.port))
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "stock-0")
    from keras_tuner.src.distribute.oracle_client import OracleClient

    stock = OracleClient(chief.oracle)
    trial = stock.create_trial("stock-0")
    assert stock.update_trial(trial.trial_id, {"val_accuracy": 0.05}, step=0).status == "RUNNING"
    trial.status = "COMPLETED"
    stock.end_trial(trial)
    assert trial.trial_id not in json.loads((chief.spec.project_dir / STATE_FILE).read_text())["stopped"]
    assert isinstance(chief.oracle, keras_tuner.Oracle)
    client.close()


def test_concurrent_reports_are_safe(chief):
    from tuner_service.client import ServiceOracleClient

    clients = [ServiceOracleClient(chief.oracle, f"127.0.0.1:{chief.port}", f"w{i}") for i in range(4)]
    errors: list[BaseException] = []

    def work(client):
        try:
            trial = client.create_trial(client.tuner_id)
            for epoch in range(5):
                client.report_progress(trial.trial_id, {"val_accuracy": 0.1 * epoch}, step=epoch)
            client.update_trial(trial.trial_id, {"val_accuracy": 0.4}, step=4)
            trial.status = "COMPLETED"
            client.end_trial(trial)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    state = chief.stopping.get_state()
    assert len(state["ended"]) == 4
    for c in clients:
        c.close()


# -- real searches: chief and workers as processes ------------------------------------------------
def _trials(project: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in project.glob("trial_*/trial.json")}


@pytest.mark.e2e
def test_search_stops_unpromising_trials_early(tmp_path: Path):
    study = tiny_study(
        tmp_path,
        model="tests.fixtures.stopping_models:learns_or_not",
        max_trials=6,
        epochs=4,
        seed=3,
        early_stopping={"rule": "median", "min_epochs": 1, "min_trials": 1},
    )
    proc = cli("run", "-c", str(study), "--workers", "1", "--no-progress", timeout=400)
    assert proc.returncode == 0, proc.stderr[-2000:]
    project = tmp_path / "studies" / "tiny"
    state = json.loads((project / STATE_FILE).read_text())
    ledger = json.loads((project / files.STATE).read_text())["trials"]
    trials = _trials(project)
    assert state["stopped"], "no trial was stopped"
    for trial_id, epochs in state["stopped"].items():
        trial = trials[f"trial_{trial_id}"]
        assert trial["status"] == "COMPLETED"
        # The worker reported `epochs` epochs (fewer than the study's 4), then ended the trial.
        assert len(state["history"][trial_id]) == epochs < 4
        # What the worker really trained: the chief's record of every epoch report it received
        # (the stopping state above stops recording once a trial is stopped, so it cannot tell).
        assert ledger[trial_id]["epochs"] == epochs, f"trial {trial_id} trained past its stop"
        assert trial["best_step"] < epochs
    # Trials that never learn (learning_rate 0) started after a learning one finished: all stopped.
    order = sorted(trials.values(), key=lambda t: t["trial_id"])
    first_good = next(i for i, t in enumerate(order) if t["hyperparameters"]["values"]["learning_rate"])
    for t in order[first_good + 1 :]:
        if t["hyperparameters"]["values"]["learning_rate"] == 0.0:
            assert t["trial_id"] in state["stopped"]
    results = json.loads((project / "results.json").read_text())
    assert results["best_hyperparameters"]["learning_rate"] == 0.01


@pytest.mark.e2e
def test_stock_keras_tuner_worker_still_works_with_early_stopping_on(tmp_path: Path):
    """An unmodified keras-tuner worker against our chief: the search completes, nothing stops."""
    import subprocess
    import sys

    from tests.helpers import free_port

    study = tiny_study(
        tmp_path,
        max_trials=2,
        epochs=2,
        early_stopping={"rule": "median", "min_epochs": 1, "min_trials": 1},
    )
    port = free_port()
    env = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(port)}
    import os

    chief = subprocess.Popen(
        [sys.executable, "-m", "tuner_service", "chief", "-c", str(study)],
        env={**os.environ, **env, "KERASTUNER_TUNER_ID": "chief"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    stock_worker = f"""
import keras_tuner
from tuner_service import data, spec as s
from tuner_service.models.seed import SeedMLP
study = s.load({str(study)!r})
splits = data.load(study.data, study.seed)
tuner = keras_tuner.RandomSearch(SeedMLP(), objective="val_accuracy", max_trials=2,
    directory={str(tmp_path / "stock")!r}, project_name="w")
tuner.search(splits.x_train, splits.y_train, validation_data=(splits.x_val, splits.y_val),
    epochs=2, batch_size=64, verbose=0)
"""
    try:
        worker = subprocess.run(
            [sys.executable, "-c", stock_worker],
            env={**os.environ, **env, "KERASTUNER_TUNER_ID": "stock-0"},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert worker.returncode == 0, worker.stderr[-2000:]
        assert chief.wait(timeout=120) == 0
    finally:
        if chief.poll() is None:
            chief.kill()
            chief.wait()
    project = tmp_path / "studies" / "tiny"
    state = json.loads((project / STATE_FILE).read_text())
    assert state["stopped"] == {}
    results = json.loads((project / "results.json").read_text())
    assert results["trials_completed"] == 2


def test_a_trial_at_its_last_epoch_is_never_counted_as_stopped():
    stop = EarlyStopping(MedianRule(min_epochs=1, min_trials=1), "max", max_epochs=2)
    stop.report("good", 0, 0.9)
    stop.report("good", 1, 0.9)
    stop.trial_ended("good")
    assert stop.report("bad", 0, 0.1) is True  # below the median after one epoch: stop
    late = EarlyStopping(MedianRule(min_epochs=1, min_trials=1), "max", max_epochs=1)
    late.report("good", 0, 0.9)
    late.trial_ended("good")
    assert late.report("bad", 0, 0.1) is False  # its only epoch: nothing left to save
    assert late.stopped == {}


def _naive_median_decision(history, ended, trial_id, sign, rule):
    """The median rule recomputed from scratch, as the definition reads (the reference)."""
    curves = {
        t: [sign * sum(h[s]) / len(h[s]) if s in h else float("nan") for s in range(max(h) + 1)]
        for t, h in history.items()
    }
    curve = curves[trial_id]
    step = len(curve) - 1
    if len(curve) < rule.min_epochs:
        return False
    peers = []
    for t in ended:
        c = curves[t]
        if t != trial_id and len(c) > step:
            values = [v for v in c[: step + 1] if v == v]
            if values:
                peers.append(sum(values) / len(values))
    if len(peers) < rule.min_trials:
        return False
    peers.sort()
    m = len(peers)
    median = peers[m // 2] if m % 2 else (peers[m // 2 - 1] + peers[m // 2]) / 2
    return max(v for v in curve if v == v) < median


def test_cached_curves_decide_exactly_as_recomputing_every_curve():
    """Reports are O(1) in the ended trials because curves are cached; the answers must not change.

    A random stream of reports, ends, late reports, retries (forget) and a restart (state
    round trip), checked against the median rule recomputed from the raw history each time.
    """
    import random

    rng = random.Random(3)
    rule = MedianRule(min_epochs=2, min_trials=3)
    stop = EarlyStopping(rule, "min")
    history: dict[str, dict[int, list[float]]] = {}
    ended: set[str] = set()
    checked = 0
    for n in range(120):
        trial_id = f"t{n}"
        quality = rng.random()
        for step in range(rng.randint(1, 6)):
            value = quality + rng.gauss(0, 0.2) - 0.05 * step
            expected = None
            if trial_id not in stop.stopped:
                history.setdefault(trial_id, {}).setdefault(step, []).append(value)
                expected = _naive_median_decision(history, ended, trial_id, -1.0, rule)
            got = stop.report(trial_id, step, value)
            if expected is not None:
                assert got == expected, (trial_id, step)
                checked += 1
            if got:
                break
        if n % 17 == 5:  # a retried trial starts again from scratch
            stop.forget(trial_id)
            history.pop(trial_id, None)
            continue
        stop.trial_ended(trial_id)
        ended.add(trial_id)
        if n % 11 == 3:  # a late report of an ended reference changes its running averages
            late = rng.random()
            stop.report(trial_id, 0, late)
            if trial_id not in stop.stopped:
                history[trial_id][0].append(late)
        if n == 60:  # a restarted chief rebuilds the caches from the saved state
            restored = EarlyStopping(rule, "min")
            restored.set_state(json.loads(json.dumps(stop.get_state())))
            stop = restored
    assert checked > 200 and stop.stopped
