"""Progress of a run while it runs, for `lrouter run` and `make demo`: what each step is doing, read from the
run's own event log (the records the UI's run page shows), so every stage says what it is doing before it ends.

What is shown: the steps, their times and the messages they log, Dagster's ``context.log`` and the library's
``lrouter.progress`` Python logger (training epochs, feature batches, captured into the run's event log by the
instance setting ``python_logs.managed_python_loggers``). On a terminal it is one line that updates in place
(cleared when the run ends); otherwise (a log file, CI) a step that runs longer than ``quiet`` seconds gets a
"running" line, then at most one message line every ``every`` seconds and a "done" line: a heartbeat of the
long steps rather than a flood of the quick ones.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

import dagster as dg

from warehouse.vocabulary import PROGRESS_LOGGER

MANAGED_LOGS = {"managed_python_loggers": [PROGRESS_LOGGER], "python_log_level": "INFO"}  # dagster.yaml python_logs

_STEP_EVENTS = {"STEP_START": "started", "STEP_SUCCESS": "done", "STEP_FAILURE": "FAILED"}


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class StageProgress:
    """Follow ``run_id``'s event log on a thread while the run executes (``with StageProgress(...):``)."""

    def __init__(self, stage: str, instance: dg.DagsterInstance, run_id: str,
                 log: Callable[[str], None] = print, *, tty: bool | None = None, stream: TextIO | None = None,
                 poll: float = 1.0, every: float = 10.0, quiet: float = 5.0):
        self.stage, self.instance, self.run_id, self.log = stage, instance, run_id, log
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.poll, self.every, self.quiet = poll, every, quiet
        self._cursor: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.monotonic()
        self._step_t0: dict[str, float] = {}
        self._last_line: dict[str, float] = {}  # step -> when its last message line was printed (not a tty)
        self._latest: dict[str, str] = {}  # step -> its latest message
        self._announced: set[str] = set()  # steps that got a line (not a tty)
        self._status = ""
        self._width = 0

    def __enter__(self) -> StageProgress:
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._follow, name=f"progress-{self.stage}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._read()  # what came after the last poll
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()

    def _follow(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                self._read()
            except Exception:  # storage busy or not created yet: the next poll reads it
                continue
            if self.tty and self._status:
                self._show(self._status)  # the clock moves even when the steps are quiet
            elif not self.tty:
                self._tick()

    def _read(self) -> None:
        while True:
            conn = self.instance.get_records_for_run(self.run_id, cursor=self._cursor, limit=500)
            for record in conn.records:
                self._entry(record.event_log_entry)
            self._cursor = conn.cursor
            if not conn.has_more:
                return

    def _entry(self, entry) -> None:
        step = entry.step_key or ""
        event = entry.dagster_event
        now = time.monotonic()
        if event is not None:
            what = _STEP_EVENTS.get(event.event_type_value)
            if what is None or not step:
                return
            if what == "started":
                self._step_t0[step] = now
                if self.tty or self.quiet <= 0:
                    self._announced.add(step)
                    self._say(step, what)
                return
            took = now - self._step_t0.pop(step, now)
            if self.tty or step in self._announced or what == "FAILED":  # quick steps stay quiet in a log
                self._say(step, f"{what} in {_clock(took)}")
            return
        if entry.level >= logging.INFO and entry.user_message and step:
            text = " ".join(entry.user_message.split())
            self._latest[step] = text
            if self.tty:
                self._say(step, text)
            elif step in self._announced and now - self._last_line.get(step, float("-inf")) >= self.every:
                self._last_line[step] = now
                self._say(step, text)

    def _tick(self) -> None:
        """A step running longer than ``quiet`` seconds gets its first line (with its latest message)."""
        now = time.monotonic()
        for step, t0 in list(self._step_t0.items()):
            if step not in self._announced and now - t0 >= self.quiet:
                self._announced.add(step)
                self._last_line[step] = now
                latest = self._latest.get(step)
                self._say(step, f"running{f' ({latest})' if latest else ''}")

    def _say(self, step: str, text: str) -> None:
        if self.tty:
            self._status = f"[{self.stage}] {step}: {text}"
            self._show(self._status)
        else:
            self.log(f"[{self.stage}] {_clock(time.monotonic() - self._t0)} {step}: {text}")

    def _show(self, status: str) -> None:
        """The one updating line: status with the stage's clock, cut to the terminal's width."""
        import shutil

        head, _, rest = status.partition(" ")
        text = f"{head} {_clock(time.monotonic() - self._t0)} {rest}"
        text = text[: max(20, shutil.get_terminal_size((120, 20)).columns - 1)]
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._width = len(text)

