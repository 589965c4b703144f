"""Every place tuner-service touches keras-tuner beyond its documented public API.

keras-tuner is a dependency, not a fork. Its distributed mode keeps the gRPC messages and stubs
in ``keras_tuner.src.protos``; we must use those exact messages to stay wire-compatible with
stock workers. Keep all such imports here, check the version range, and test them
(tests/test_compat.py), so an upgrade breaks in one obvious place.
"""

from __future__ import annotations

from importlib.metadata import version
from types import ModuleType

import keras_tuner
from packaging.version import Version

SUPPORTED = (Version("1.4.7"), Version("1.5"))


def check_version() -> str:
    found = version("keras-tuner")
    lo, hi = SUPPORTED
    if not (lo <= Version(found) < hi):
        raise RuntimeError(
            f"tuner-service supports keras-tuner >={lo},<{hi}; found {found}. "
            "Install a supported version (pip install 'keras-tuner>=1.4.7,<1.5')."
        )
    return found


def service_pb2() -> ModuleType:
    """keras-tuner's ``service_pb2`` (request/response messages of the Oracle service)."""
    from keras_tuner.src import protos

    return protos.get_service()


def service_pb2_grpc() -> ModuleType:
    """keras-tuner's ``service_pb2_grpc`` (the Oracle servicer base class and stub)."""
    from keras_tuner.src import protos

    return protos.get_service_grpc()


def oracle_service_name() -> str:
    """Fully-qualified gRPC service name, used for health checks."""
    return service_pb2().DESCRIPTOR.services_by_name["Oracle"].full_name


def project_dir(oracle: keras_tuner.Oracle) -> str:
    """Where the oracle keeps oracle.json and trial_*/ (set by the Tuner that owns it)."""
    return oracle._project_dir


def queued_for_retry(oracle: keras_tuner.Oracle, trial_id: str) -> bool:
    """Whether ``end_trial`` sent the trial back for a retry (INVALID with retries left)."""
    return trial_id in oracle._retry_queue
