"""One chief per study directory: a lease on the shared storage, with a heartbeat and a fencing token.

Two chiefs on one study overwrite each other's oracle, trials and results. ``flock`` does not
protect a ReadWriteMany volume (NFS clients may not support it, and a dead client's lock lingers),
so the lock is a plain file, ``chief.lock``, kept alive by its holder:

* **Exclusive create.** The first chief creates the file with a hard link from a temporary file
  (atomic, and it fails if the name exists, on NFS too). Its JSON names the holder: ``host``,
  ``pid``, ``start`` (the process's start time, so a reused pid is not mistaken for the holder),
  ``nonce`` (one per acquisition), ``token``, ``since`` and ``heartbeat`` (wall-clock seconds).
* **Heartbeat.** The holder rewrites ``heartbeat`` every ``heartbeat`` seconds with the study's one
  atomic write (write, then rename). Before each rewrite it reads the file: another nonce there
  means another chief took over, and the holder is *lost* (``on_lost``; the chief stops without
  writing). A holder that cannot renew for ``stale_after - heartbeat`` gives up too, before anyone
  may take it over.
* **Takeover.** A lock is free when released (clean exit), when its heartbeat is older than
  ``stale_after``, when its holder was a process of this host that has exited, or when it names
  this very host and pid under another nonce (a restarted container whose chief is pid 1 again).
  A free lock is taken with ``token + 1`` (the **fencing token**: it grows with every owner) and
  read back after ``settle`` seconds: of two chiefs taking over at once, the one whose nonce is
  not there has lost and refuses, as below.
* **Refusal.** A lock whose holder lives is refused with :class:`StudyLocked` (exit 2), naming
  host, pid, since and how long until it would be taken over: at once when the holder is a
  running process of this host; after watching its heartbeat move (at most ``heartbeat``
  seconds) when it is elsewhere. A holder whose heartbeat does not move (e.g. its node died a few
  seconds ago and its pod was rescheduled) is waited for until it is stale, and the log says so.
* **Fencing.** :meth:`StudyLock.check` raises :class:`LockLost` once the lock is lost; it is called
  before the chief writes its ledger and oracle. It costs nothing on the hot path, except when the
  last verification is older than half of ``stale_after`` (the process was frozen, e.g. SIGSTOP):
  then it reads the file first.

Clocks: a lock is stale when its heartbeat is ``stale_after`` old by this host's wall clock, or
did not move for ``stale_after`` while this host watched (so a skewed clock delays a takeover by
at most ``stale_after``, and never makes a live chief look dead).

>>> import tempfile
>>> root = Path(tempfile.mkdtemp())
>>> first = StudyLock(root, settle=0)
>>> first.acquire().token
1
>>> StudyLock(root, settle=0, pid=os.getppid()).acquire()  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
tuner_service.study.lock.StudyLocked: study ... is served by another chief: host ...
>>> first.release()
>>> StudyLock(root, settle=0, pid=os.getppid()).acquire().token
2
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tuner_service.process import UsageError
from tuner_service.study.files import LOCK, read_json, write_json_atomic

log = logging.getLogger(__name__)

STALE_AFTER = 30.0  # seconds without a heartbeat after which a lock is taken over
HEARTBEAT = 5.0  # seconds between the holder's heartbeats
SETTLE = 0.5  # seconds a taker waits before reading its takeover back


class StudyLocked(UsageError):
    """Another chief serves this study (exit 2: a second chief is a mistake to fix, not retry)."""


class LockLost(RuntimeError):
    """Another chief took the study over, or this one could not renew its lease in time."""


@dataclass(frozen=True)
class Holder:
    """The content of ``chief.lock``."""

    host: str
    pid: int
    start: str  # the process's start time (/proc), "" where unknown
    nonce: str
    token: int
    since: float
    heartbeat: float
    released: bool = False

    @classmethod
    def parse(cls, data: Any) -> Holder | None:
        try:
            return cls(**data)
        except TypeError:
            return None

    def describe(self, now: float) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(self.since))
        return f"host {self.host}, pid {self.pid}, since {since} (token {self.token})"


def _stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (empty where /proc cannot tell)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def process_start(pid: int) -> str:
    """A pid's start time in clock ticks since boot ('' where /proc cannot tell)."""
    fields = _stat(pid)
    return fields[19] if len(fields) > 19 else ""


def pid_alive(pid: int, start: str) -> bool:
    """Whether the process ``pid`` that started at ``start`` still runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    fields = _stat(pid)
    if fields and fields[0] in ("Z", "X"):  # killed, not yet reaped by its parent: dead
        return False
    now = fields[19] if len(fields) > 19 else ""
    return not (start and now and now != start)  # a different start: the pid was reused


class StudyLock:
    """The lock of the study directory ``root``; see the module docstring for the protocol."""

    def __init__(
        self,
        root: Path,
        *,
        stale_after: float = STALE_AFTER,
        heartbeat: float = HEARTBEAT,
        settle: float = SETTLE,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        host: str | None = None,
        pid: int | None = None,
        alive: Callable[[int, str], bool] = pid_alive,
    ):
        if not heartbeat < stale_after:
            raise ValueError(f"heartbeat ({heartbeat}s) must be shorter than stale_after ({stale_after}s)")
        self.path = Path(root) / LOCK
        self.stale_after = stale_after
        self.heartbeat = heartbeat
        self.settle = settle
        self.clock, self.monotonic, self.sleep = clock, monotonic, sleep
        self.host = host or socket.gethostname()
        self.pid = os.getpid() if pid is None else pid
        self.start = process_start(self.pid)
        self.alive = alive
        self.nonce = uuid.uuid4().hex
        self.held: Holder | None = None
        self.lost: str | None = None  # why, once lost
        self._verified = 0.0  # monotonic() of the last time the file was seen to name us
        self._last_renewed = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()
        self.on_lost: list[Callable[[str], None]] = []  # called once, from the heartbeat thread

    # -- reading ---------------------------------------------------------------------------
    def read(self) -> Holder | None:
        """The lock file's holder; None when there is no file or it cannot be read."""
        return Holder.parse(read_json(self.path))

    def _mtime(self) -> float | None:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return None

    def free_because(self, holder: Holder, now: float) -> str | None:
        """Why ``holder``'s lock may be taken over now, or None while it holds it."""
        if holder.released:
            return "released by its chief"
        if holder.host == self.host:
            if holder.pid == self.pid and holder.nonce != self.nonce:
                return f"pid {holder.pid} is this process now: its chief was restarted"
            if not self.alive(holder.pid, holder.start):
                return f"its process {holder.pid} on this host has exited"
        age = now - holder.heartbeat
        if age >= self.stale_after:
            return f"no heartbeat for {age:.0f}s (stale after {self.stale_after:g}s)"
        return None

    # -- taking it ---------------------------------------------------------------------------
    def acquire(self) -> Holder:
        """Take the lock, waiting at most about ``stale_after`` for a holder that stopped beating.

        Raises :class:`StudyLocked` when a live chief holds it: a process of this host that
        runs, or a chief elsewhere whose heartbeat moves while this one watches (at most
        ``heartbeat`` seconds, so clock skew between hosts cannot make a live chief look dead).
        """
        give_up = self.monotonic() + self.stale_after + self.settle + 2 * self.heartbeat
        watched: tuple[str, float, float] | None = None  # nonce, heartbeat, monotonic() first seen
        said_waiting = False
        while True:
            now = self.clock()
            holder = self.read()
            if holder is None and self._mtime() is None:
                if self._create(now):
                    log.debug("study lock %s taken (token 1)", self.path)
                    return self._won()
                continue  # someone created it meanwhile: look at theirs
            if holder is None:  # a file nobody can read: judge it by its age
                age = now - (self._mtime() or now)
                if age < self.stale_after:
                    raise StudyLocked(
                        f"{self.path} is unreadable and {age:.0f}s old; remove it if no chief runs"
                    )
                holder = Holder("?", 0, "", "", 0, now - age, now - age)
            if watched is None or watched[:2] != (holder.nonce, holder.heartbeat):
                if watched is not None and watched[0] == holder.nonce:  # its heartbeat moved: alive
                    raise StudyLocked(self._refusal(holder, now))
                watched = (holder.nonce, holder.heartbeat, self.monotonic())
            unchanged = self.monotonic() - watched[2]
            reason = self.free_because(holder, now)
            if reason is None and unchanged >= self.stale_after:
                reason = (
                    f"its heartbeat did not move for {unchanged:.0f}s (stale after {self.stale_after:g}s)"
                )
            if reason is not None:
                if self._take_over(holder, now):
                    log.warning(
                        "study lock %s taken over from %s: %s", self.path, holder.describe(now), reason
                    )
                    return self._won()
                watched = None
                continue
            if holder.host == self.host or self.monotonic() > give_up:  # here: its process runs
                raise StudyLocked(self._refusal(holder, now))
            stale_in = max(0.0, min(holder.heartbeat + self.stale_after - now, self.stale_after - unchanged))
            if unchanged > 2 * self.heartbeat and not said_waiting:
                log.warning(
                    "study %s is locked by a chief that stopped beating %.0fs ago (%s): waiting up to "
                    "%.0fs for its lock to go stale, then taking it over",
                    self.path.parent,
                    now - holder.heartbeat,
                    holder.describe(now),
                    stale_in,
                )
                said_waiting = True
            self.sleep(max(0.05, min(stale_in, self.heartbeat / 2)))

    def _refusal(self, holder: Holder, now: float) -> str:
        left = max(0.0, holder.heartbeat + self.stale_after - now)
        return (
            f"study {self.path.parent} is served by another chief: {holder.describe(now)}, last heartbeat "
            f"{now - holder.heartbeat:.0f}s ago; it would be considered dead after {left:.0f}s more without "
            f"a heartbeat. Stop that chief (or wait), or use another study name"
        )

    def _record(self, token: int, now: float, since: float | None = None) -> dict[str, Any]:
        return asdict(Holder(self.host, self.pid, self.start, self.nonce, token, since or now, now))

    def _create(self, now: float) -> bool:
        """Exclusive create: a hard link of a complete temporary file (atomic on NFS)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{self.nonce}.tmp")
        tmp.write_text(json.dumps(self._record(1, now)))
        try:
            os.link(tmp, self.path)
        except FileExistsError:
            # On NFS a retransmitted LINK whose first reply was lost fails with EEXIST although
            # it succeeded: the temporary file then has two links (the classic NFS lock check).
            return os.stat(tmp).st_nlink == 2
        except OSError as err:
            if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            return self._create_exclusive(now)  # a filesystem without hard links
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def _create_exclusive(self, now: float) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(self._record(1, now)))
        return True

    def _take_over(self, holder: Holder, now: float) -> bool:
        write_json_atomic(self.path, self._record(holder.token + 1, now))
        self.sleep(self.settle)  # a concurrent taker's write lands meanwhile; the last one wins
        current = self.read()
        return current is not None and current.nonce == self.nonce

    def _won(self) -> Holder:
        self.held = self.read()
        assert self.held is not None and self.held.nonce == self.nonce
        self._verified = self._last_renewed = self.monotonic()
        return self.held

    # -- keeping it --------------------------------------------------------------------------
    def renew(self) -> None:
        """One heartbeat: verify the file still names us, then rewrite its time. Raises LockLost."""
        with self._guard:
            if self.lost:
                raise LockLost(self.lost)
            try:
                current = self.read()
                if current is not None and current.nonce != self.nonce:
                    self._lose(
                        f"another chief took over study {self.path.parent}: {current.describe(self.clock())}"
                    )
                assert self.held is not None
                write_json_atomic(self.path, self._record(self.held.token, self.clock(), self.held.since))
                self._verified = self._last_renewed = self.monotonic()
            except OSError as err:
                silent = self.monotonic() - self._last_renewed
                log.error(
                    "cannot renew the study lock %s (%.0fs since the last renewal): %s",
                    self.path,
                    silent,
                    err,
                )
                if silent >= self.stale_after - self.heartbeat:
                    self._lose(f"could not renew the study lock {self.path} for {silent:.0f}s ({err})")

    def _lose(self, why: str) -> None:
        self.lost = why
        raise LockLost(why)

    def check(self) -> None:
        """Before a write: raise LockLost if this chief no longer owns the study."""
        if self.lost:
            raise LockLost(self.lost)
        if self.held is not None and self.monotonic() - self._verified > self.stale_after / 2:
            self.renew()  # frozen for a while (SIGSTOP, a stalled volume): look before writing

    def start_heartbeat(self, on_lost: Callable[[str], None] | None = None) -> None:
        """Renew every ``heartbeat`` seconds in a daemon thread; call each of :attr:`on_lost`
        (and ``on_lost``) with the reason, once, if the lock is lost."""
        if on_lost is not None:
            self.on_lost.append(on_lost)

        def beat() -> None:
            while not self._stop.wait(self.heartbeat):
                try:
                    self.renew()
                except LockLost as err:
                    log.error("%s", err)
                    for listener in list(self.on_lost):
                        listener(str(err))
                    return

        self._thread = threading.Thread(target=beat, name="study-lock-heartbeat", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop the heartbeat and mark the lock released (the token stays, for the next owner)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.heartbeat + 5)
        with self._guard:
            if self.held is None or self.lost:
                return
            current = self.read()
            if current is None or current.nonce == self.nonce:
                record = {**self._record(self.held.token, self.clock(), self.held.since), "released": True}
                try:
                    write_json_atomic(self.path, record)
                except OSError as err:  # the next chief takes it over when it is stale
                    log.error("cannot release the study lock %s: %s", self.path, err)
            self.held = None

    def __enter__(self) -> StudyLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
