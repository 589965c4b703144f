"""One end per trial and true verdicts, over real gRPC, for stock keras-tuner workers and ours.

A stock worker sends keras-tuner's messages with no metadata at all (no tuner id): repeats,
contradictions, unknown ids and non-finite results must be handled for it exactly as for ours.
"""

from __future__ import annotations

import math
from pathlib import Path

import grpc
import keras_tuner
import pytest
from keras_tuner.engine.trial import TrialStatus

from tests.fault.test_leases import _oracle
from tuner_service import compat
from tuner_service.chief.server import make_server
from tuner_service.chief.servicer import OracleServicer
from tuner_service.client import ServiceOracleClient, TrialFenced
from tuner_service.metrics import ChiefMetrics
from tuner_service.study.ledger import Ledger

pb2 = compat.service_pb2()


@pytest.fixture
def chief(tmp_path: Path):
    oracle = _oracle(tmp_path, max_trials=4, max_retries_per_trial=1, max_consecutive_failed_trials=10)
    ledger = Ledger("p", 4)
    servicer = OracleServicer(oracle, ledger, lease_timeout=60)
    metrics = ChiefMetrics(ledger).attach(servicer)
    built = make_server(servicer, "127.0.0.1:0")
    server, port = built.server, built.port
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = compat.service_pb2_grpc().OracleStub(channel)
    yield servicer, stub, metrics, port
    channel.close()
    server.stop(None)


def _ended_total(metrics: ChiefMetrics, status: str) -> float:
    return metrics.registry.get_sample_value(
        "tuner_service_trials_ended_total", {"study": "p", "status": status}
    )


def _start(stub, tuner_id: str = "stock"):
    return stub.CreateTrial(pb2.CreateTrialRequest(tuner_id=tuner_id)).trial


def _end(stub, proto, status: str, message: str | None = None):
    trial = keras_tuner.engine.trial.Trial.from_proto(proto)
    trial.status = status
    return stub.EndTrial(pb2.EndTrialRequest(trial=trial.to_proto()))


def _report(stub, trial_id: str, value: float, loss: float = 0.5):
    return stub.UpdateTrial(
        pb2.UpdateTrialRequest(trial_id=trial_id, metrics={"val_accuracy": value, "loss": loss})
    )


def test_repeated_end_changes_nothing_and_counts_nothing(chief):
    servicer, stub, metrics, _ = chief
    trial = _start(stub)
    _report(stub, trial.trial_id, 0.7)
    _end(stub, trial, TrialStatus.COMPLETED)
    before = servicer.ledger.snapshot()
    _end(stub, trial, TrialStatus.COMPLETED)  # the answer was lost, the stock worker retried
    after = servicer.ledger.snapshot()
    assert _ended_total(metrics, "completed") == 1
    assert after["workers"]["stock"]["trials_completed"] == 1
    assert after["trials"] == before["trials"]
    assert servicer.oracle.end_order.count(trial.trial_id) == 1


def test_contradicting_end_is_refused_with_already_exists_and_changes_nothing(chief):
    servicer, stub, metrics, _ = chief
    trial = _start(stub)
    _report(stub, trial.trial_id, 0.7)
    _end(stub, trial, TrialStatus.COMPLETED)
    with pytest.raises(grpc.RpcError) as refused:
        _end(stub, trial, TrialStatus.FAILED)
    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "trial 0 already ended COMPLETED (score 0.7); EndTrial(FAILED) refused, nothing changed" in (
        refused.value.details()
    )
    with pytest.raises(grpc.RpcError) as late:
        _report(stub, trial.trial_id, 0.1)
    assert late.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "UpdateTrial refused" in late.value.details()
    ended = servicer.oracle.get_trial(trial.trial_id)
    assert (ended.status, ended.score) == (TrialStatus.COMPLETED, 0.7)
    assert servicer.ledger.best_trial_id == trial.trial_id
    assert servicer.ledger.trials[trial.trial_id].status == "COMPLETED"
    assert _ended_total(metrics, "failed") == 0 and _ended_total(metrics, "completed") == 1
    assert servicer.failure is None  # no consecutive-failure count, the search goes on


def test_our_worker_reporting_on_a_trial_another_worker_ended_is_fenced(chief):
    servicer, _, _, port = chief
    w0 = ServiceOracleClient(servicer.oracle, f"127.0.0.1:{port}", "w0", chief_deadline=5)
    w1 = ServiceOracleClient(servicer.oracle, f"127.0.0.1:{port}", "w1", chief_deadline=5)
    try:
        trial = w0.create_trial("w0")
        servicer.leases.clock = lambda: 1e12  # w0 silent past its lease
        servicer.reap_leases()
        assert w1.create_trial("w1").trial_id == trial.trial_id
        w1.update_trial(trial.trial_id, {"val_accuracy": 0.4})
        trial.status = TrialStatus.COMPLETED
        w1.end_trial(trial)
        with pytest.raises(TrialFenced, match="already ended COMPLETED on w1"):
            w0.report_progress(trial.trial_id, {"val_accuracy": 0.9}, step=3)
        trial.status = TrialStatus.FAILED
        with pytest.raises(TrialFenced):
            w0.end_trial(trial)
        assert servicer.oracle.get_trial(trial.trial_id).score == 0.4
    finally:
        w0.close()
        w1.close()


@pytest.mark.parametrize("tuner_id", [None, "w7"])
def test_unknown_trial_ids_get_not_found_with_a_true_message(chief, tuner_id):
    _, stub, _, _ = chief
    md = (("tuner-service-tuner-id", tuner_id),) if tuner_id else ()
    calls = [
        lambda: stub.UpdateTrial(
            pb2.UpdateTrialRequest(trial_id="99", metrics={"val_accuracy": 1.0}), metadata=md
        ),
        lambda: stub.EndTrial(
            pb2.EndTrialRequest(
                trial=keras_tuner.engine.trial.Trial(
                    keras_tuner.HyperParameters(), "99", TrialStatus.COMPLETED
                ).to_proto()
            ),
            metadata=md,
        ),
        lambda: stub.GetTrial(pb2.GetTrialRequest(trial_id="99")),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert "trial '99' does not exist in this study" in err.value.details()
        assert "silent" not in err.value.details()


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_non_finite_objective_fails_the_trial_is_retried_and_never_becomes_best(chief, bad):
    servicer, stub, metrics, _ = chief
    good = _start(stub, "a")
    _report(stub, good.trial_id, 0.6)
    _end(stub, good, TrialStatus.COMPLETED)
    trial = _start(stub, "a")
    _report(stub, trial.trial_id, bad)
    _end(stub, trial, TrialStatus.COMPLETED)
    record = servicer.ledger.trials[trial.trial_id]
    assert record.status == "RETRY" and "non-finite final metrics (val_accuracy=" in record.message
    retry = _start(stub, "a")
    assert retry.trial_id == trial.trial_id  # max_retries_per_trial: 1
    _report(stub, trial.trial_id, 0.5, loss=bad)  # a finite objective but a diverged loss
    _end(stub, retry, TrialStatus.COMPLETED)
    ended = servicer.oracle.get_trial(trial.trial_id)
    assert ended.status == TrialStatus.FAILED and "loss=" in ended.message
    assert not ended.metrics.exists("val_accuracy")  # nothing non-finite reached the oracle
    assert servicer.oracle.get_best_trials(1)[0].trial_id == good.trial_id
    assert servicer.ledger.best_trial_id == good.trial_id and servicer.ledger.best_score == 0.6
    assert _ended_total(metrics, "completed") == 1


def test_completed_without_a_final_objective_fails_instead_of_crashing_the_chief(chief):
    servicer, stub, _, _ = chief
    trial = _start(stub)
    _end(stub, trial, TrialStatus.COMPLETED)  # no UpdateTrial: e.g. the chief restarted in between
    record = servicer.ledger.trials[trial.trial_id]
    assert record.status == "RETRY" and "no final value of val_accuracy" in record.message
