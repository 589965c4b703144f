"""Fan the ledger's events out to any number of status streams, each with its own bounded queue."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tuner_service.study.ledger import Event, Ledger

# Kinds a status stream carries; worker_seen (every RPC) is too chatty and says nothing new.
STREAMED = frozenset({"trial_started", "trial_reported", "trial_ended", "trial_reassigned", "search_state"})
QUEUE_SIZE = 1024
CLOSED = None  # put on every queue when the hub closes: the streams end


class EventHub:
    """Subscribed once to the ledger; a slow reader loses its oldest events, never blocks the chief."""

    def __init__(self, ledger: Ledger, maxsize: int = QUEUE_SIZE):
        self._queues: set[queue.Queue[Event | None]] = set()
        self._lock = threading.Lock()
        self._maxsize = maxsize
        self.closed = False
        ledger.subscribe(self.publish)

    @property
    def subscribers(self) -> int:
        """Open streams now (each subscribes on its first read)."""
        with self._lock:
            return len(self._queues)

    def publish(self, event: Event) -> None:
        if event.kind not in STREAMED:
            return
        with self._lock:
            queues = list(self._queues)
        for q in queues:
            _put_dropping_oldest(q, event)

    @contextmanager
    def subscription(self) -> Iterator[queue.Queue[Event | None]]:
        q: queue.Queue[Event | None] = queue.Queue(self._maxsize)
        with self._lock:
            if self.closed:
                q.put(CLOSED)
            self._queues.add(q)
        try:
            yield q
        finally:
            with self._lock:
                self._queues.discard(q)

    def close(self) -> None:
        with self._lock:
            self.closed = True
            queues = list(self._queues)
        for q in queues:
            _put_dropping_oldest(q, CLOSED)


def _put_dropping_oldest(q: queue.Queue[Event | None], item: Event | None) -> None:
    while True:
        try:
            q.put_nowait(item)
            return
        except queue.Full:
            try:
                q.get_nowait()
            except queue.Empty:
                pass
