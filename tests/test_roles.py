"""Roles come only from keras-tuner's environment contract (and an Indexed Job's index)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import cli, tiny_study
from tuner_service import process
from tuner_service.process import EnvError, Role

CONTRACT = {"KERASTUNER_ORACLE_IP": "10.0.0.5", "KERASTUNER_ORACLE_PORT": "8000"}


def test_worker_role_from_contract() -> None:
    role = Role.from_env({**CONTRACT, "KERASTUNER_TUNER_ID": "tuner3"}, chief=False)
    assert (role.tuner_id, role.address, role.is_chief) == ("tuner3", "10.0.0.5:8000", False)


def test_indexed_job_index_gives_a_stable_tuner_id() -> None:
    role = Role.from_env({**CONTRACT, "JOB_COMPLETION_INDEX": "7"}, chief=False)
    assert role.tuner_id == "worker-7"


def test_explicit_tuner_id_wins_over_job_index() -> None:
    role = Role.from_env({**CONTRACT, "KERASTUNER_TUNER_ID": "w", "JOB_COMPLETION_INDEX": "7"}, chief=False)
    assert role.tuner_id == "w"


def test_chief_binds_all_interfaces_by_default() -> None:
    role = Role.from_env({"KERASTUNER_ORACLE_PORT": "8000"}, chief=True)
    assert (role.tuner_id, role.address) == ("chief", "0.0.0.0:8000")


@pytest.mark.parametrize(
    ("env", "chief", "message"),
    [
        ({"KERASTUNER_ORACLE_IP": "h", "KERASTUNER_ORACLE_PORT": "1"}, False, "KERASTUNER_TUNER_ID"),
        ({"KERASTUNER_TUNER_ID": "w", "KERASTUNER_ORACLE_PORT": "1"}, False, "KERASTUNER_ORACLE_IP"),
        ({**CONTRACT, "KERASTUNER_ORACLE_PORT": "http"}, True, "expected a TCP port"),
        ({**CONTRACT, "KERASTUNER_TUNER_ID": "chief"}, False, "must not contain 'chief'"),
        ({**CONTRACT, "KERASTUNER_TUNER_ID": "worker-0"}, True, "must contain 'chief'"),
    ],
)
def test_incomplete_contract_is_a_clear_error(env: dict, chief: bool, message: str) -> None:
    with pytest.raises(EnvError, match=message):
        Role.from_env(env, chief=chief)


def test_worker_without_contract_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        monkeypatch.delenv(name, raising=False)
    result = cli("worker", "--config", str(tiny_study(tmp_path)), timeout=120)
    assert result.returncode == 2
    assert "KERASTUNER_TUNER_ID (or JOB_COMPLETION_INDEX) is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_chief_runs_blas_on_one_thread_unless_the_user_chose(monkeypatch):
    """OpenBLAS's spinning idle thread took a third of a core from the chief's RPC threads."""
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    process.one_blas_thread()
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1"
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "4")
    process.one_blas_thread()
    assert os.environ["OPENBLAS_NUM_THREADS"] == "4"
