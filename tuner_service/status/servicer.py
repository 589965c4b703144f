"""The Status service: maps the chief's ledger to status messages, and nothing else.

The mapping functions take a ledger *snapshot* (the dict ``Ledger.snapshot()`` returns and
``service_state.json`` holds) and trial histories (``status/history.py``), so the CLI renders a
running chief's answer and a finished search's saved state with the same code.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from typing import Any

import grpc

from tuner_service.status._generated import status_pb2 as pb
from tuner_service.status._generated import status_pb2_grpc as pb_grpc
from tuner_service.status.events import EventHub
from tuner_service.study.history import TrialHistory
from tuner_service.study.ledger import Event, Ledger

FINAL_STATES = frozenset({"finished", "failed", "interrupted"})
_KINDS = {
    "trial_started": pb.Event.TRIAL_STARTED,
    "trial_reported": pb.Event.TRIAL_REPORTED,
    "trial_ended": pb.Event.TRIAL_ENDED,
    "trial_reassigned": pb.Event.TRIAL_REASSIGNED,
    "search_state": pb.Event.SEARCH_STATE,
}


# -- ledger snapshot → messages ---------------------------------------------------------------
def status_message(snap: dict[str, Any], *, objective: str = "", direction: str = "") -> pb.SearchStatus:
    counts = {str(k): int(v) for k, v in (snap.get("counts") or {}).items()}
    max_trials = int(snap.get("max_trials") or 0)
    msg = pb.SearchStatus(
        study=snap.get("name", ""),
        state=snap.get("state") or "",
        message=snap.get("message") or "",
        max_trials=max_trials,
        counts=counts,
        progress=min(1.0, counts.get("COMPLETED", 0) / max_trials) if max_trials else 0.0,
        objective=objective,
        direction=direction,
        updated_at=float(snap.get("updated_at") or time.time()),
    )
    if snap.get("best_trial_id") is not None and snap.get("best_score") is not None:
        msg.best.CopyFrom(pb.BestTrial(trial_id=snap["best_trial_id"], score=float(snap["best_score"])))
    for tuner_id, w in sorted((snap.get("workers") or {}).items()):
        msg.workers.append(
            pb.Worker(
                tuner_id=tuner_id,
                state=w.get("state") or "",
                trial_id=w.get("trial_id") or "",
                last_seen=float(w.get("last_seen") or 0.0),
                trials_completed=int(w.get("trials_completed") or 0),
            )
        )
    return msg


def trial_message(record: dict[str, Any], history: list[dict[str, Any]] = ()) -> pb.Trial:
    msg = pb.Trial(
        trial_id=record["trial_id"],
        tuner_id=record.get("tuner_id") or "",
        status=record.get("status") or "",
        started_at=float(record.get("started_at") or 0.0),
        epochs=int(record.get("epochs") or 0),
        attempts=int(record.get("attempts") or 1),
        message=(record.get("message") or "").strip()[-2000:],
    )
    for name in ("score", "ended_at"):
        if record.get(name) is not None:
            setattr(msg, name, float(record[name]))
    if record.get("ended_at") is not None:
        msg.duration_seconds = float(record["ended_at"]) - msg.started_at
    for point in history:
        msg.history.append(
            pb.EpochMetrics(
                step=int(point["step"]),
                metrics={k: float(v) for k, v in point["metrics"].items()},
                time=float(point.get("time") or 0.0),
            )
        )
    return msg


def trials_message(
    snap: dict[str, Any],
    histories: dict[str, list[dict[str, Any]]] | None = None,
    statuses: list[str] | None = None,
) -> pb.ListTrialsResponse:
    """The snapshot's trials in start order; ``histories`` (trial id → points) when wanted."""
    wanted = set(statuses or ())
    records = sorted(
        (snap.get("trials") or {}).values(), key=lambda r: (r.get("started_at") or 0, r["trial_id"])
    )
    histories = histories or {}
    return pb.ListTrialsResponse(
        trials=[
            trial_message(r, histories.get(r["trial_id"], []))
            for r in records
            if not wanted or r["status"] in wanted
        ]
    )


def event_message(event: Event) -> pb.Event | None:
    kind = _KINDS.get(event.kind)
    if kind is None:
        return None
    data = event.data
    msg = pb.Event(kind=kind, time=event.time, tuner_id=event.tuner_id or "", trial_id=event.trial_id or "")
    if kind == pb.Event.TRIAL_REPORTED:
        msg.step = int(data.get("step") or 0)
        msg.metrics.update({k: float(v) for k, v in (data.get("metrics") or {}).items()})
    elif kind == pb.Event.TRIAL_ENDED:
        msg.status = str(data.get("status") or "")
        if data.get("score") is not None:
            msg.score = float(data["score"])
        if data.get("duration") is not None:
            msg.duration_seconds = float(data["duration"])
    elif kind == pb.Event.SEARCH_STATE:
        msg.state = str(data.get("state") or "")
    msg.message = str(data.get("message") or data.get("reason") or "")
    return msg


# -- the service -------------------------------------------------------------------------------
class StatusServicer(pb_grpc.StatusServicer):
    """Read-only view of a running chief's ledger. Streams end at a final search state."""

    def __init__(
        self,
        ledger: Ledger,
        hub: EventHub,
        history: TrialHistory,
        *,
        objective: str = "",
        direction: str = "",
    ):
        self.ledger = ledger
        self.hub = hub
        self.history = history
        self.objective, self.direction = objective, direction

    def GetStatus(self, request: pb.GetStatusRequest, context: grpc.ServicerContext) -> pb.SearchStatus:
        return status_message(self.ledger.snapshot(), objective=self.objective, direction=self.direction)

    def ListTrials(
        self, request: pb.ListTrialsRequest, context: grpc.ServicerContext
    ) -> pb.ListTrialsResponse:
        histories = None if request.without_history else self.history.all()
        return trials_message(self.ledger.snapshot(), histories, list(request.statuses))

    def WatchEvents(
        self, request: pb.WatchEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.Event]:
        kinds = set(request.kinds)
        with self.hub.subscription() as events:
            # Subscribed first, then checked: a search that ended in between is not missed.
            if self.ledger.state in FINAL_STATES:
                yield pb.Event(kind=pb.Event.SEARCH_STATE, time=time.time(), state=self.ledger.state)
                return
            while context.is_active():
                try:
                    event = events.get(timeout=1.0)  # wakes to notice a cancelled client
                except queue.Empty:
                    continue
                if event is None:  # the chief is shutting the status server down
                    return
                msg = event_message(event)
                if msg is None:
                    continue
                if not kinds or msg.kind in kinds:
                    yield msg
                if msg.kind == pb.Event.SEARCH_STATE and msg.state in FINAL_STATES:
                    return
