"""The study lock (tuner_service/study/lock.py): one chief per study directory, with a fake clock.

Two StudyLock objects in one test stand for two chiefs (different nonces, and a host/pid given
where the test needs them to differ). Nothing sleeps for real: ``sleep`` advances the fake clock.
"""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import pytest

from tuner_service.study import files, lock
from tuner_service.study.lock import LockLost, StudyLock, StudyLocked


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _lock(root: Path, clock: Clock, *, host: str = "node-a", pid: int = 100, alive=lambda pid, start: True):
    return StudyLock(
        root,
        stale_after=30,
        heartbeat=5,
        settle=0.5,
        clock=clock,
        monotonic=clock,
        sleep=clock.sleep,
        host=host,
        pid=pid,
        alive=alive,
    )


def test_first_chief_creates_the_lock_exclusively_and_names_itself(tmp_path: Path) -> None:
    clock = Clock()
    holder = _lock(tmp_path, clock).acquire()
    saved = json.loads((tmp_path / files.LOCK).read_text())
    assert (holder.host, holder.pid, holder.token) == ("node-a", 100, 1)
    assert saved["nonce"] == holder.nonce and saved["heartbeat"] == clock.now
    assert [p.name for p in tmp_path.iterdir()] == [files.LOCK]  # no temporary file left


def test_second_chief_is_refused_with_the_holders_host_pid_since_and_time_to_takeover(tmp_path: Path) -> None:
    clock = Clock()
    _lock(tmp_path, clock, host="node-a", pid=100).acquire()
    clock.now += 4
    started = clock.now
    with pytest.raises(StudyLocked) as refused:  # same host, and its process runs: at once
        _lock(tmp_path, clock, host="node-a", pid=200).acquire()
    message = str(refused.value)
    assert "host node-a, pid 100, since " in message
    assert "last heartbeat 4s ago" in message and "dead after 26s more" in message
    assert clock.now == started
    assert json.loads((tmp_path / files.LOCK).read_text())["pid"] == 100  # untouched


def test_chief_on_another_host_is_refused_once_its_heartbeat_is_seen_to_move(tmp_path: Path) -> None:
    clock = Clock()
    holder = _lock(tmp_path, clock, host="node-a")
    holder.acquire()
    second = _lock(tmp_path, clock, host="node-b")

    def holder_beats_meanwhile(seconds: float) -> None:
        clock.sleep(seconds)
        holder.renew()

    second.sleep = holder_beats_meanwhile
    started = clock.now
    with pytest.raises(StudyLocked, match="host node-a, pid 100"):
        second.acquire()
    assert clock.now - started <= 5  # one heartbeat at most
    assert json.loads((tmp_path / files.LOCK).read_text())["host"] == "node-a"


def test_skewed_clock_cannot_hide_a_dead_holder_for_longer_than_stale_after(tmp_path: Path) -> None:
    clock = Clock()
    _lock(tmp_path, clock, host="node-a").acquire()
    # node-a's clock ran 1 h ahead: by ours its last heartbeat is in the future, and it is dead.
    path = tmp_path / files.LOCK
    path.write_text(json.dumps({**json.loads(path.read_text()), "heartbeat": clock.now + 3600}))
    started = clock.now
    assert _lock(tmp_path, clock, host="node-b").acquire().token == 2
    assert 30 <= clock.now - started <= 30 + 5 + 0.5


def test_stale_lock_is_taken_over_with_the_next_fencing_token(tmp_path: Path) -> None:
    clock = Clock()
    old = _lock(tmp_path, clock, host="node-a")
    old.acquire()
    clock.now += 31  # node-a died: no heartbeat since
    new = _lock(tmp_path, clock, host="node-b").acquire()
    assert (new.host, new.token) == ("node-b", 2)
    # The old holder comes back (e.g. SIGCONT): its next heartbeat finds the takeover and stops.
    with pytest.raises(LockLost, match="another chief took over .* host node-b"):
        old.renew()
    with pytest.raises(LockLost):
        old.check()
    assert json.loads((tmp_path / files.LOCK).read_text())["host"] == "node-b"  # not overwritten


def test_holder_that_missed_beats_is_waited_for_until_stale_then_taken_over(tmp_path: Path) -> None:
    clock = Clock()
    _lock(tmp_path, clock, host="node-a").acquire()
    clock.now += 15  # missed two beats, not stale yet: a rescheduled chief waits instead of exiting 2
    started = clock.now
    new = _lock(tmp_path, clock, host="node-b").acquire()
    assert new.token == 2 and new.host == "node-b"
    waited = clock.now - started
    assert 15 <= waited <= 15 + 5 + 0.5, waited  # until stale, at most one heartbeat late


def test_lock_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path: Path) -> None:
    clock = Clock()
    _lock(tmp_path, clock, pid=100).acquire()
    clock.now += 1  # beating a second ago, but its process is gone (SIGKILL, then a restart)
    new = _lock(tmp_path, clock, pid=101, alive=lambda pid, start: pid != 100).acquire()
    assert (new.pid, new.token) == (101, 2)
    assert clock.now - 1_000_001.0 <= 0.5  # only the settle time


def test_restarted_container_with_the_same_pid_takes_its_own_lock_over(tmp_path: Path) -> None:
    clock = Clock()
    _lock(tmp_path, clock, pid=1).acquire()  # pid 1 in a container
    clock.now += 1
    assert _lock(tmp_path, clock, pid=1).acquire().token == 2  # pid 1 again, another nonce


def test_release_frees_the_lock_and_keeps_the_token_growing(tmp_path: Path) -> None:
    clock = Clock()
    first = _lock(tmp_path, clock, host="node-a")
    first.acquire()
    first.release()
    assert json.loads((tmp_path / files.LOCK).read_text())["released"] is True
    second = _lock(tmp_path, clock, host="node-b")
    assert second.acquire().token == 2
    second.release()
    assert _lock(tmp_path, clock, host="node-c").acquire().token == 3


def test_two_takers_at_once_only_one_wins(tmp_path: Path) -> None:
    clock = Clock()
    _lock(tmp_path, clock, host="node-a").acquire()
    clock.now += 31
    b, c = _lock(tmp_path, clock, host="node-b"), _lock(tmp_path, clock, host="node-c")
    stale = b.read()
    assert stale is not None and b.free_because(stale, clock.now)
    won: list[bool] = []

    def c_takes_over_meanwhile(seconds: float) -> None:
        # c judged the same stale lock free and writes its takeover while b waits to read back;
        # then c beats, as a live chief does.
        if not won:
            won.append(c._take_over(stale, clock.now))
            c._won()
        else:
            c.renew()
        clock.sleep(seconds)

    b.sleep = c_takes_over_meanwhile
    with pytest.raises(StudyLocked, match="host node-c"):
        b.acquire()
    assert won == [True]
    assert json.loads((tmp_path / files.LOCK).read_text())["host"] == "node-c"


def test_holder_that_cannot_renew_gives_up_before_anyone_may_take_over(tmp_path: Path, monkeypatch) -> None:
    clock = Clock()
    held = _lock(tmp_path, clock)
    held.acquire()

    def disk_gone(*args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(lock, "write_json_atomic", disk_gone)
    clock.now += 5
    held.renew()  # logged; still within its lease
    clock.now += 20
    with pytest.raises(LockLost, match="could not renew the study lock .* for 25s"):
        held.renew()


def test_check_reads_the_file_after_the_holder_was_frozen(tmp_path: Path) -> None:
    clock = Clock()
    old = _lock(tmp_path, clock, host="node-a")
    old.acquire()
    old.check()  # fresh: no I/O needed, no error
    clock.now += 40  # frozen (SIGSTOP) past stale; another chief took over meanwhile
    _lock(tmp_path, clock, host="node-b").acquire()
    with pytest.raises(LockLost, match="node-b"):
        old.check()


def test_unreadable_lock_is_refused_while_young_and_taken_over_when_old(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / files.LOCK
    path.write_text("not json")
    mtime = path.stat().st_mtime
    clock.now = mtime + 2
    with pytest.raises(StudyLocked, match="unreadable"):
        _lock(tmp_path, clock).acquire()
    clock.now = mtime + 31
    assert _lock(tmp_path, clock).acquire().token == 1


def test_heartbeat_thread_keeps_the_lock_fresh_and_reports_a_takeover(tmp_path: Path) -> None:
    import threading

    held = StudyLock(tmp_path, stale_after=2, heartbeat=0.05, settle=0)
    held.acquire()
    lost = threading.Event()
    reasons: list[str] = []
    held.start_heartbeat(lambda why: (reasons.append(why), lost.set()))
    first = json.loads((tmp_path / files.LOCK).read_text())["heartbeat"]
    assert _wait(lambda: json.loads((tmp_path / files.LOCK).read_text())["heartbeat"] > first)
    other = StudyLock(tmp_path, stale_after=2, heartbeat=0.05, settle=0, host="elsewhere")
    other._take_over(held.read(), other.clock())  # what a chief that judged it stale would write
    assert lost.wait(5), "the heartbeat did not notice the takeover"
    assert "another chief took over" in reasons[0] and "elsewhere" in reasons[0]
    held.release()  # a lost lock is not released over the new owner's
    assert json.loads((tmp_path / files.LOCK).read_text())["host"] == "elsewhere"


def test_module_doctest() -> None:
    assert doctest.testmod(lock).failed == 0


def _wait(predicate, timeout: float = 5.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_pid_alive_tells_running_killed_and_reused_processes() -> None:
    import signal
    import subprocess
    import sys

    from tuner_service.study.lock import pid_alive, process_start

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = process_start(child.pid)
        assert start and pid_alive(child.pid, start)
        assert not pid_alive(child.pid, str(int(start) + 1))  # same pid, another process
        child.send_signal(signal.SIGKILL)
        assert _wait(lambda: not pid_alive(child.pid, start))  # a zombie (not reaped yet) is dead
    finally:
        child.kill()
        child.wait()
    assert not pid_alive(child.pid, start)
