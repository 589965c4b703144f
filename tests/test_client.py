"""The worker's client: a chief that is gone for good does not keep a worker waiting for nothing."""

from __future__ import annotations

import time

import keras_tuner
import pytest

from tests.helpers import free_port
from tuner_service.client import ChiefUnreachable, SearchFailed, SearchFinished, ServiceOracleClient


def _client(state: dict | None, deadline: float = 30.0) -> ServiceOracleClient:
    oracle = keras_tuner.oracles.RandomSearchOracle(objective="val_accuracy", max_trials=1)
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    return ServiceOracleClient(
        oracle, address, "worker-0", chief_deadline=deadline, search_state=lambda: state
    )


@pytest.mark.parametrize(
    ("state", "error", "message"),
    [
        (
            {"state": "failed", "message": "too many failures"},
            SearchFailed,
            "search failed: too many failures",
        ),
        ({"state": "finished"}, SearchFinished, "search finished"),
    ],
)
def test_an_ended_search_on_the_storage_ends_the_wait(state: dict, error: type, message: str) -> None:
    start = time.monotonic()
    with pytest.raises(error, match=message):
        _client(state).create_trial("worker-0")
    assert time.monotonic() - start < 10  # not the 30 s chief deadline


@pytest.mark.parametrize("state", [None, {"state": "running"}, {"state": "interrupted"}])
def test_a_chief_that_may_come_back_is_waited_for_until_the_deadline(state: dict | None) -> None:
    start = time.monotonic()
    with pytest.raises(ChiefUnreachable):
        _client(state, deadline=2.0).create_trial("worker-0")
    assert time.monotonic() - start >= 2.0
