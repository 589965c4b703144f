"""`tuner-service status`: a search's live state from the chief's status API.

With ``--config`` the chief is found through the study's ``endpoints.json`` (written by the
running chief), else on ``127.0.0.1:<status_port>``; when no chief answers, the saved ledger
(``service_state.json``) is shown instead, so the command also works after the search.
``--chief host:port`` asks that chief only. ``--watch`` redraws on every event the chief streams
(no polling) and returns when the search ends; ``--json`` prints machine-readable output.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from tuner_service import fmt
from tuner_service.status._generated import status_pb2 as pb
from tuner_service.status.client import StatusClient, StatusUnavailable
from tuner_service.status.servicer import FINAL_STATES, status_message, trials_message
from tuner_service.study import endpoints, files
from tuner_service.study import history as history_file
from tuner_service.study.ledger import read_snapshot

REDRAW_EVERY = 0.5  # seconds: at most this often while events pour in
WAIT_FOR_CHIEF = 60.0  # seconds `--watch` gives a chief that is still starting
MAX_TABLE_TRIALS = 20  # trial rows in the table (all running ones first); --json has them all


@dataclass
class View:
    status: pb.SearchStatus
    trials: list[pb.Trial]
    source: str  # "chief host:port" or the saved state's path

    def to_json(self) -> dict[str, Any]:
        def as_dict(msg: Any) -> dict[str, Any]:
            return MessageToDict(
                msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
            )

        return {
            "source": self.source,
            "status": as_dict(self.status),
            "trials": [as_dict(t) for t in self.trials],
        }


class Source:
    """A live chief, and (for a study) the ledger its chief saved in the study directory.

    ``study``, when known, guards against a stale ``endpoints.json`` whose port another search's
    chief now uses: its answer is ignored and the saved state is shown instead.
    """

    def __init__(
        self,
        address: str | None,
        project_dir: Path | None = None,
        *,
        study: str = "",
        objective: str = "",
        status_port: int = 0,
    ):
        self.project_dir, self.study, self.objective, self.status_port = (
            project_dir,
            study,
            objective,
            status_port,
        )
        self.address = address
        self.client = StatusClient(address) if address else None

    @classmethod
    def for_chief(cls, address: str) -> Source:
        return cls(address)

    @classmethod
    def for_study(cls, project_dir: Path, study: str, status_port: int, objective: str) -> Source:
        """The chief ``endpoints.json`` names, else ``127.0.0.1:<status_port>``; then the saved state."""
        source = cls(None, project_dir, study=study, objective=objective, status_port=status_port)
        source.reconnect()
        return source

    def reconnect(self) -> None:
        """Look again where the study's chief listens (it writes endpoints.json once it serves)."""
        if self.project_dir is None:
            return
        address = endpoints.read(self.project_dir).get("status") or (
            f"127.0.0.1:{self.status_port}" if self.status_port else None
        )
        if address != self.address:
            self.close()
            self.address = address
            self.client = StatusClient(address) if address else None

    def close(self) -> None:
        if self.client is not None:
            self.client.close()

    def live(self, history: bool) -> View:
        if self.client is None:
            raise StatusUnavailable("no status address (status_port is 0)")
        status = self.client.status()
        if self.study and status.study != self.study:
            raise StatusUnavailable(f"the chief at {self.address} serves study {status.study!r}")
        return View(status, self.client.trials(history=history), f"chief {self.address}")

    def saved(self, history: bool) -> View | None:
        snap = read_snapshot(self.project_dir) if self.project_dir else None
        if snap is None:
            return None
        status = status_message(snap, objective=self.objective)
        histories = history_file.read(self.project_dir / files.HISTORY) if history else None
        trials = list(trials_message(snap, histories).trials)
        return View(status, trials, str(self.project_dir / files.STATE))

    def fetch(self, history: bool) -> View:
        """The live chief's answer, else the saved state, else StatusUnavailable."""
        try:
            return self.live(history)
        except StatusUnavailable as err:
            view = self.saved(history)
            if view is None:
                where = f"; no saved state in {self.project_dir}" if self.project_dir else ""
                raise StatusUnavailable(f"{err}{where}") from None
            return view

    def wait_live(self, history: bool, wait: float) -> View:
        """Like :meth:`fetch`, but give a starting chief up to ``wait`` seconds to answer, unless
        the saved state says the search is over already."""
        deadline = time.monotonic() + wait
        delay = 0.2
        told = False
        while True:
            try:
                return self.live(history)
            except StatusUnavailable:
                view = self.saved(history)
                if (view is not None and view.status.state in FINAL_STATES) or time.monotonic() > deadline:
                    return self.fetch(history)
            if not told:
                print(f"waiting up to {wait:.0f}s for the chief...", file=sys.stderr, flush=True)
                told = True
            time.sleep(delay)  # a chief starting up (TensorFlow loads first): back off, then look again
            delay = min(delay * 2, 2.0)
            self.reconnect()


# -- rendering ---------------------------------------------------------------------------------
def summary(s: pb.SearchStatus) -> str:
    done = s.counts.get("COMPLETED", 0)
    budget = str(s.max_trials) if s.max_trials else "?"
    best = f"{fmt.number(s.best.score)} (trial {s.best.trial_id})" if s.HasField("best") else "-"
    others = ", ".join(f"{n} {k.lower()}" for k, n in sorted(s.counts.items()) if k != "COMPLETED" and n)
    return (
        f"study {s.study}: {s.state}, trials {done}/{budget} completed"
        f"{' (' + others + ')' if others else ''}; best {s.objective or 'objective'} {best}"
    )


def _table_rows(trials: list[pb.Trial], limit: int) -> list[pb.Trial]:
    """Every running trial, then the latest ended ones up to ``limit`` rows, in start order."""
    running = [t for t in trials if t.status == "RUNNING"]
    ended = [t for t in trials if t.status != "RUNNING"]
    keep = {id(t) for t in running + ended[len(ended) - max(0, limit - len(running)) :]}
    return [t for t in trials if id(t) in keep]


def render(view: View, now: float | None = None, max_trials: int = MAX_TABLE_TRIALS) -> Group:
    """Workers, then trials: all running ones and the latest others, up to ``max_trials`` rows."""
    now = time.time() if now is None else now
    s = view.status
    head = Table(title=summary(s), title_justify="left", caption=view.source, caption_justify="left")
    for col in ("worker", "state", "trial", "completed", "seen"):
        head.add_column(col)
    for w in s.workers:
        head.add_row(
            w.tuner_id,
            w.state,
            w.trial_id or "-",
            str(w.trials_completed),
            f"{fmt.age(now - w.last_seen)} ago",
        )
    rows = _table_rows(list(view.trials), max_trials)
    title = (
        "trials" if len(rows) == len(view.trials) else f"trials (latest {len(rows)} of {len(view.trials)})"
    )
    trials = Table(title=title, title_justify="left")
    for col in ("trial", "status", "worker", "reported epochs", "score", "seconds", "attempts"):
        trials.add_column(col)
    for t in rows:
        seconds = t.duration_seconds if t.HasField("duration_seconds") else now - t.started_at
        trials.add_row(
            t.trial_id,
            t.status,
            t.tuner_id or "-",
            str(t.epochs),
            fmt.number(t.score if t.HasField("score") else None),
            fmt.number(seconds, 1),
            str(t.attempts),
        )
    return Group(head, trials)


# -- the command -------------------------------------------------------------------------------
def show(source: Source, *, as_json: bool, out: Callable[[str], None] = print) -> View:
    view = source.fetch(history=as_json)
    if as_json:
        out(json.dumps(view.to_json(), indent=2))
    else:
        Console().print(render(view))
    return view


def watch(source: Source, *, as_json: bool, wait: float = WAIT_FOR_CHIEF) -> View:
    """Redraw on each streamed event (throttled); return the last view when the search ends."""
    console = Console()
    live = Live(console=console, refresh_per_second=4) if console.is_terminal and not as_json else None
    last_line = ""

    def draw(view: View) -> None:
        nonlocal last_line
        if as_json:
            print(json.dumps(view.to_json()), flush=True)
        elif live is not None:
            live.update(render(view))
        else:  # not a terminal: one line per change
            line = summary(view.status)
            if line != last_line:
                print(line, flush=True)
                last_line = line

    view = source.wait_live(history=as_json, wait=wait)
    if live is not None:
        live.start()
    try:
        draw(view)
        if not view.source.startswith("chief ") or view.status.state in FINAL_STATES:
            return view
        drawn = time.monotonic()
        try:
            for event in source.client.events():
                final = event.kind == pb.Event.SEARCH_STATE and event.state in FINAL_STATES
                if final or time.monotonic() - drawn >= REDRAW_EVERY:
                    view = source.fetch(history=as_json)
                    draw(view)
                    drawn = time.monotonic()
        except StatusUnavailable:
            pass  # the chief went away: show what it left behind, if anything
        view = source.fetch(history=as_json)
        draw(view)
        return view
    finally:
        if live is not None:
            live.stop()


def main(source: Source, *, as_json: bool, follow: bool, wait: float = WAIT_FOR_CHIEF) -> int:
    try:
        watch(source, as_json=as_json, wait=wait) if follow else show(source, as_json=as_json)
    except StatusUnavailable as err:
        print(f"tuner-service status: {err}", file=sys.stderr)
        return 1
    finally:
        source.close()
    return 0
