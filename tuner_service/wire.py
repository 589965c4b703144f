"""Our additions to keras-tuner's Oracle protocol, carried as gRPC metadata (wire-compatible).

keras-tuner's messages stay exactly as they are, so stock workers and stock chiefs interoperate;
a stock peer simply sends none of these keys and ignores them. See docs/fault-tolerance.md.
"""

from __future__ import annotations

from collections.abc import Sequence

# Every call from our worker: which tuner id is speaking (UpdateTrial/EndTrial carry none).
TUNER_ID = "tuner-service-tuner-id"
# Every call from our worker: which process is speaking (host:pid:random, new at each start), so
# the chief can tell a restarted pod of a tuner id from a second live process with the same id.
INSTANCE = "tuner-service-instance"
# On UpdateTrial: "progress" marks the per-epoch report (the heartbeat). The chief renews the
# lease and records the progress, but does not feed it to the oracle's scoring (the final
# report does, exactly as stock keras-tuner).
REPORT = "tuner-service-report"
PROGRESS = "progress"
# On GetTrial: "release" hands the trial back (the worker was told to stop: SIGTERM, spot
# preemption). The chief queues it at once for the next worker, which resumes it from its last
# epoch backup; no failure is counted, no retry spent. GetTrial because it is the one trial call a
# stock keras-tuner chief answers without side effects: an UpdateTrial without the objective
# raises inside keras-tuner's oracle, which then never releases its lock (every later call hangs).
RELEASE = "release"
# In the trailing metadata of an ABORTED answer: why this worker was fenced. "superseded": a newer
# process with the same tuner id took over; this one must stop (asking again would take the
# trial back). Without it, ABORTED means "your lease ran out": drop the trial, ask for new work.
FENCE = "tuner-service-fence"
SUPERSEDED = "superseded"
# On EndTrial: the trial's error message (keras-tuner's Trial proto has no message field).
MESSAGE = "tuner-service-message-bin"
MESSAGE_LIMIT = 4000  # bytes; gRPC's default metadata limit is 8 KiB

Metadata = Sequence[tuple[str, str | bytes]]


def get(metadata: Metadata | None, key: str) -> str | None:
    for k, v in metadata or ():
        if k == key:
            return v.decode("utf-8", "replace") if isinstance(v, bytes) else v
    return None


def encode_message(message: str) -> bytes:
    """The tail of a (traceback) message: the exception itself is at the end."""
    data = message.encode("utf-8", "replace")
    return data[-MESSAGE_LIMIT:]
