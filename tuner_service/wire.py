"""Our additions to keras-tuner's Oracle protocol, carried as gRPC metadata (wire-compatible).

keras-tuner's messages stay exactly as they are, so stock workers and stock chiefs interoperate;
a stock peer simply sends none of these keys and ignores them. See docs/fault-tolerance.md.
"""

from __future__ import annotations

from collections.abc import Sequence

# Every call from our worker: which tuner id is speaking (UpdateTrial/EndTrial carry none).
TUNER_ID = "tuner-service-tuner-id"
# On UpdateTrial: "progress" marks the per-epoch report (the heartbeat). The chief renews the
# lease and records the progress, but does not feed it to the oracle's scoring (the final
# report does, exactly as stock keras-tuner).
REPORT = "tuner-service-report"
PROGRESS = "progress"
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
