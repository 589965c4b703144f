"""Client of the status API: a few typed calls, errors as one :class:`StatusUnavailable`.

Example::

    from tuner_service.status.client import StatusClient

    with StatusClient("127.0.0.1:8001") as client:
        status = client.status()
        print(status.state, status.counts["COMPLETED"], "/", status.max_trials)
        for event in client.events():          # ends when the search does
            print(event.kind, event.trial_id)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import grpc

from tuner_service.auth import ClientSecurity
from tuner_service.status._generated import status_pb2 as pb
from tuner_service.status._generated import status_pb2_grpc as pb_grpc


class StatusUnavailable(Exception):
    """The chief's status service did not answer (not running, wrong address, or refused)."""


class StatusClient:
    def __init__(self, address: str, *, timeout: float = 10.0, security: ClientSecurity | None = None):
        """``security`` (default: from the environment, as the workers) is the bearer token to
        send and the CA that makes the channel TLS (:mod:`tuner_service.auth`)."""
        self.address = address
        self.timeout = timeout
        security = security or ClientSecurity.from_env()
        self._channel = security.channel(address)
        self._stub = pb_grpc.StatusStub(self._channel)
        self._metadata = security.metadata or None

    def __enter__(self) -> StatusClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _fail(self, err: grpc.RpcError) -> StatusUnavailable:
        return StatusUnavailable(f"chief status at {self.address}: {err.code().name}: {err.details()}")

    def status(self) -> pb.SearchStatus:
        try:
            return self._stub.GetStatus(pb.GetStatusRequest(), timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as err:
            raise self._fail(err) from None

    def trials(self, statuses: Iterable[str] = (), *, history: bool = True) -> list[pb.Trial]:
        request = pb.ListTrialsRequest(statuses=list(statuses), without_history=not history)
        try:
            response = self._stub.ListTrials(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as err:
            raise self._fail(err) from None
        return list(response.trials)

    def events(self, kinds: Iterable[int] = ()) -> Iterator[pb.Event]:
        """Events from now on; the iterator ends when the search reaches a final state."""
        stream = self._stub.WatchEvents(pb.WatchEventsRequest(kinds=list(kinds)), metadata=self._metadata)
        try:
            yield from stream
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.CANCELLED:
                raise self._fail(err) from None
        finally:
            stream.cancel()
