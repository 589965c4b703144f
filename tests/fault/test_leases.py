"""Leases, fencing and the wire extensions, against a real keras-tuner oracle over real gRPC.

No training here: trials are handed out and reported on by hand, with a fake clock for leases.
"""

from __future__ import annotations

import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import keras
import keras_tuner
import pytest
from keras_tuner.engine.trial import TrialStatus

from tuner_service import compat, wire
from tuner_service.chief.leases import Leases, StaleHolder
from tuner_service.chief.leases import Superseded as SupersededHolder
from tuner_service.chief.server import make_server
from tuner_service.chief.servicer import OracleServicer
from tuner_service.client import ServiceOracleClient, Superseded, TrialFenced
from tuner_service.study.ledger import Ledger

pb2 = compat.service_pb2()


def _build(hp: keras_tuner.HyperParameters) -> keras.Model:
    hp.Int("units", 1, 64)
    return keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])


def _oracle(tmp_path: Path, max_trials: int = 3, **kwargs) -> keras_tuner.Oracle:
    tuner = keras_tuner.RandomSearch(
        _build,
        objective=keras_tuner.Objective("val_accuracy", "max"),
        max_trials=max_trials,
        directory=str(tmp_path),
        project_name="p",
        **kwargs,
    )
    tuner.save()  # so that a second tuner on this directory reloads it, like a restarted chief
    return tuner.oracle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def leases(tmp_path: Path):
    oracle = _oracle(tmp_path)
    ledger = Ledger("p", 3)
    events: list = []
    ledger.subscribe(events.append)
    clock = Clock()
    return Leases(oracle, ledger, timeout=10, clock=clock), oracle, ledger, clock, events


def _hand_out(leases: Leases, oracle, ledger, tuner_id: str) -> str:
    trial = oracle.create_trial(tuner_id)
    leases.grant(trial.trial_id, tuner_id)
    ledger.trial_started(tuner_id, trial.trial_id)
    return trial.trial_id


def test_silent_worker_loses_its_trial_without_a_failure(leases):
    table, oracle, ledger, clock, events = leases
    tid = _hand_out(table, oracle, ledger, "w0")
    clock.now += 9
    table.admit(tid, "w0")  # the heartbeat renews the lease
    clock.now += 9
    assert table.reap() == []
    clock.now += 2
    assert table.reap() == [tid]
    assert tid in compat.retry_queue(oracle) and "w0" not in oracle.ongoing_trials
    assert oracle._run_times[tid] == 0  # not counted as a run: no retry budget spent
    assert ledger.trials[tid].status == "QUEUED" and ledger.trials[tid].reassigned == 1
    reassigned = [e for e in events if e.kind == "trial_reassigned"]
    assert reassigned[0].trial_id == tid and reassigned[0].tuner_id == "w0"
    assert reassigned[0].data["silent_for"] == pytest.approx(11)

    # The next worker that asks gets it (and it counts as a second attempt).
    assert _hand_out(table, oracle, ledger, "w1") == tid
    assert ledger.trials[tid].attempts == 2 and ledger.trials[tid].tuner_id == "w1"
    with pytest.raises(StaleHolder):  # the lease is w1's now
        table.admit(tid, "w0")


def test_late_report_from_old_holder_is_fenced(leases):
    table, oracle, ledger, clock, _ = leases
    tid = _hand_out(table, oracle, ledger, "w0")
    clock.now += 11
    table.reap()
    _hand_out(table, oracle, ledger, "w1")
    with pytest.raises(StaleHolder, match=f"trial {tid} is no longer held by w0; it was reassigned to w1"):
        table.admit(tid, "w0")
    table.admit(tid, "w1")
    table.admit(tid, None)  # a stock worker names no tuner id: accepted, as stock does


def test_old_holder_gets_its_trial_back_while_nobody_took_it(leases):
    table, oracle, ledger, clock, events = leases
    tid = _hand_out(table, oracle, ledger, "w0")
    clock.now += 11
    table.reap()
    table.admit(tid, "w0")
    assert oracle.ongoing_trials["w0"].trial_id == tid and tid not in compat.retry_queue(oracle)
    assert ledger.trials[tid].status == "RUNNING" and ledger.trials[tid].attempts == 1
    assert events[-1].kind == "trial_reattached"


def test_restarted_chief_regrants_running_trials_to_their_holders(tmp_path):
    oracle = _oracle(tmp_path)
    ledger = Ledger("p", 3)
    first = oracle.create_trial("w0").trial_id
    ledger.trial_started("w0", first)
    oracle.save()
    # A new chief on the same storage: keras-tuner reloads and queues the running trial.
    again = _oracle(tmp_path)
    assert compat.retry_queue(again) == [first] and not again.ongoing_trials
    table = Leases(again, ledger, timeout=10)
    assert table.restore() == [first]
    assert again.ongoing_trials["w0"].trial_id == first
    with pytest.raises(StaleHolder):  # the restored lease is w0's
        table.admit(first, "w1")
    # Its end is accepted from the holder (keras-tuner's display had not recorded its start).
    trial = again.get_trial(first)
    trial.status = TrialStatus.COMPLETED
    again.update_trial(first, {"val_accuracy": 0.5})
    again.end_trial(trial)
    assert again.get_trial(first).status == TrialStatus.COMPLETED


def test_ended_trial_is_never_handed_out_again_after_reload(tmp_path):
    oracle = _oracle(tmp_path)
    trial = oracle.create_trial("w0")
    oracle.update_trial(trial.trial_id, {"val_accuracy": 0.7})
    trial.status = TrialStatus.COMPLETED
    # keras-tuner's end_trial saves oracle.json while the trial is still "ongoing"; a chief
    # killed right then reloads it as ongoing. Reproduce that file.
    oracle.end_trial(trial)
    oracle.ongoing_trials["w0"] = oracle.get_trial(trial.trial_id)
    oracle.save()
    again = _oracle(tmp_path)
    assert compat.retry_queue(again) == [trial.trial_id]
    assert compat.drop_ended_from_retry_queue(again) == [trial.trial_id]
    assert compat.retry_queue(again) == []
    assert again.create_trial("w1").trial_id != trial.trial_id


def test_oracle_lock_is_released_after_an_oracle_error(tmp_path):
    oracle = _oracle(tmp_path)

    def bad_call() -> None:
        try:
            oracle.update_trial("no-such-trial", {"val_accuracy": 1.0})
        except KeyError:
            compat.release_leaked_oracle_lock(oracle)

    t = threading.Thread(target=bad_call)
    t.start()
    t.join()
    done = threading.Event()
    other = threading.Thread(target=lambda: (oracle.create_trial("w0"), done.set()), daemon=True)
    other.start()
    assert done.wait(10), "the oracle stayed locked after update_trial raised on another thread"


# -- over gRPC -------------------------------------------------------------------------------------
@pytest.fixture
def served(tmp_path: Path):
    oracle = _oracle(tmp_path, max_retries_per_trial=0)
    ledger = Ledger("p", 3)
    servicer = OracleServicer(oracle, ledger, lease_timeout=60)
    built = make_server(servicer, "127.0.0.1:0")
    server, port = built.server, built.port
    server.start()
    clients: list[ServiceOracleClient] = []

    def client(tuner_id: str) -> ServiceOracleClient:
        c = ServiceOracleClient(oracle, f"127.0.0.1:{port}", tuner_id, chief_deadline=5)
        clients.append(c)
        return c

    yield servicer, client, port
    for c in clients:
        c.close()
    server.stop(None)


def test_progress_is_a_heartbeat_and_not_scored(served):
    servicer, client, _ = served
    w0 = client("w0")
    trial = w0.create_trial("w0")
    for epoch, acc in enumerate([0.9, 0.2]):
        w0.report_progress(trial.trial_id, {"val_accuracy": acc, "loss": 1.0}, step=epoch)
    # keras-tuner's Tuner skips its final report when the objective was already reported;
    # progress must not count as that, so the trial is scored exactly as stock scores it.
    assert not w0.get_trial(trial.trial_id).metrics.exists("val_accuracy")
    assert servicer.ledger.trials[trial.trial_id].epochs == 2
    w0.update_trial(trial.trial_id, {"val_accuracy": 0.5}, step=1)  # the final (stock) report
    trial.status = TrialStatus.COMPLETED
    w0.end_trial(trial)
    assert servicer.oracle.get_trial(trial.trial_id).score == 0.5


def test_fenced_worker_gets_aborted_and_the_new_holder_finishes(served):
    servicer, client, _ = served
    w0, w1 = client("w0"), client("w1")
    trial = w0.create_trial("w0")
    servicer.leases.clock = lambda: time.monotonic() + 61  # w0 has been silent past its lease
    servicer.reap_leases()
    assert w1.create_trial("w1").trial_id == trial.trial_id
    with pytest.raises(TrialFenced, match="reassigned to w1"):
        w0.report_progress(trial.trial_id, {"val_accuracy": 0.1}, step=3)
    with pytest.raises(TrialFenced):
        w0.end_trial(trial)
    w1.update_trial(trial.trial_id, {"val_accuracy": 0.4})
    trial.status = TrialStatus.COMPLETED
    w1.end_trial(trial)
    assert servicer.oracle.get_trial(trial.trial_id).score == 0.4


def test_error_message_travels_beside_the_stock_message_and_stock_workers_still_work(served):
    servicer, client, port = served
    w0 = client("w0")
    trial = w0.create_trial("w0")
    trial.status = TrialStatus.FAILED
    trial.message = "Traceback ...\nValueError: loss is NaN"
    w0.end_trial(trial)
    assert servicer.oracle.get_trial(trial.trial_id).message.endswith("ValueError: loss is NaN")
    assert servicer.ledger.trials[trial.trial_id].message.endswith("loss is NaN")

    # A stock keras-tuner worker: the same messages, no metadata at all.
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = compat.service_pb2_grpc().OracleStub(channel)
        stock = stub.CreateTrial(pb2.CreateTrialRequest(tuner_id="stock")).trial
        stub.UpdateTrial(pb2.UpdateTrialRequest(trial_id=stock.trial_id, metrics={"val_accuracy": 0.3}))
        ended = keras_tuner.engine.trial.Trial.from_proto(stock)
        ended.status = TrialStatus.COMPLETED
        stub.EndTrial(pb2.EndTrialRequest(trial=ended.to_proto()))
    assert servicer.oracle.get_trial(stock.trial_id).score == 0.3


def test_wire_message_keeps_the_tail():
    long = "x" * 10_000 + "ValueError: the end"
    assert wire.encode_message(long).decode().endswith("ValueError: the end")
    assert len(wire.encode_message(long)) == wire.MESSAGE_LIMIT


# -- hand-over on SIGTERM and one process per tuner id ----------------------------------------------
def test_released_trial_is_queued_at_once_without_spending_a_retry(leases):
    table, oracle, ledger, clock, events = leases
    tid = _hand_out(table, oracle, ledger, "w0")
    assert table.release_to_queue(tid, "w0") is True  # no time passes: no lease has to run out
    assert tid in compat.retry_queue(oracle) and "w0" not in oracle.ongoing_trials
    assert oracle._run_times[tid] == 0  # not a run: max_retries_per_trial untouched
    assert "w0" not in oracle.tuner_ids  # the chief will not wait to tell it STOPPED
    assert table.next_expiry() is None and table.reap() == []
    record = ledger.trials[tid]
    assert record.status == "QUEUED" and record.released == 1 and record.reassigned == 0
    assert ledger.workers["w0"].state == "done"
    assert events[-1].kind == "trial_reassigned" and events[-1].data == {"reason": "released"}
    # The next worker gets it; keras-tuner never saw a failure.
    assert _hand_out(table, oracle, ledger, "w1") == tid
    assert ledger.trials[tid].attempts == 2 and ledger.trials[tid].tuner_id == "w1"


def test_only_the_holder_can_release_and_a_second_release_is_a_no_op(leases):
    table, oracle, ledger, clock, _ = leases
    tid = _hand_out(table, oracle, ledger, "w0")
    with pytest.raises(StaleHolder, match=f"trial {tid} is not held by w1; it is held by w0"):
        table.release_to_queue(tid, "w1")
    assert oracle.ongoing_trials["w0"].trial_id == tid
    assert table.release_to_queue(tid, "w0") is True
    assert table.release_to_queue(tid, "w0") is False  # already queued (e.g. its lease had run out)
    assert compat.retry_queue(oracle) == [tid]


def test_newest_process_of_a_tuner_id_wins_and_the_older_is_superseded(leases):
    table, *_ = leases
    table.identify("w0", "host-a:1")
    table.identify("w0", "host-a:1")
    table.identify("w1", "host-c:3")  # other tuner ids are independent
    table.identify("w0", "host-b:2")  # a replacement pod: it takes over the tuner id
    table.identify("w0", "host-b:2")
    with pytest.raises(SupersededHolder, match="another process with this tuner id \\(host-b:2\\) took over"):
        table.identify("w0", "host-a:1")
    table.identify("w0", None)  # stock workers name no process: never fenced
    table.identify(None, "host-a:1")


def test_release_over_grpc_resumes_on_the_next_worker(served):
    servicer, client, _ = served
    w0, w1 = client("w0"), client("w1")
    trial = w0.create_trial("w0")
    w0.report_progress(trial.trial_id, {"val_accuracy": 0.3}, step=0)
    w0.release_trial(trial.trial_id)
    assert compat.retry_queue(servicer.oracle) == [trial.trial_id]
    again = w1.create_trial("w1")
    assert again.trial_id == trial.trial_id and again.status == TrialStatus.RUNNING
    record = servicer.ledger.trials[trial.trial_id]
    assert record.tuner_id == "w1" and record.released == 1 and record.attempts == 2
    with pytest.raises(TrialFenced, match="not held by w0; it is held by w1"):
        w0.release_trial(trial.trial_id)
    w1.update_trial(trial.trial_id, {"val_accuracy": 0.6})
    trial.status = TrialStatus.COMPLETED
    w1.end_trial(trial)
    assert servicer.oracle.get_trial(trial.trial_id).status == TrialStatus.COMPLETED


def test_second_process_with_one_tuner_id_takes_over_and_the_first_is_superseded(served):
    servicer, client, _ = served
    first, second = client("w0"), client("w0")
    trial = first.create_trial("w0")
    first.report_progress(trial.trial_id, {"val_accuracy": 0.1}, step=0)
    # The second process asks as a restarted pod would: it gets the tuner id's trial (and resumes it).
    assert second.create_trial("w0").trial_id == trial.trial_id
    with pytest.raises(Superseded, match="another process with this tuner id .* took over"):
        first.report_progress(trial.trial_id, {"val_accuracy": 0.2}, step=1)
    with pytest.raises(Superseded):  # it must stop: asking again would take the trial back
        first.create_trial("w0")
    second.report_progress(trial.trial_id, {"val_accuracy": 0.3}, step=1)
    assert servicer.ledger.trials[trial.trial_id].tuner_id == "w0"


def test_release_is_harmless_for_a_stock_chief(tmp_path):
    """A stock keras-tuner chief answers the release (a GetTrial) and keeps serving."""
    from keras_tuner.src.distribute import oracle_chief

    oracle = _oracle(tmp_path)
    server = grpc.server(futures.ThreadPoolExecutor(2))
    compat.service_pb2_grpc().add_OracleServicer_to_server(oracle_chief.OracleServicer(oracle), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        w0 = ServiceOracleClient(oracle, f"127.0.0.1:{port}", "w0", chief_deadline=5)
        trial = w0.create_trial("w0")
        w0.release_trial(trial.trial_id)
        assert oracle.ongoing_trials["w0"].trial_id == trial.trial_id  # stock: nothing moved
        w1 = ServiceOracleClient(oracle, f"127.0.0.1:{port}", "w1", chief_deadline=5)
        assert w1.create_trial("w1").trial_id != trial.trial_id  # and the oracle is not locked
        w0.close()
        w1.close()
    finally:
        server.stop(None)
