"""What the terminal shows while ``crm-potential run`` works, so that it is never silent for more than a few seconds.

A line as soon as the command starts (before the heavy imports), one line when each asset step starts
(``[3/14] dbt_models: dbt build of 15 model(s) ...``, see ``run_logging``), the steps' own lines (rows, batches,
dbt models) in between, and, when nothing was printed for ``HEARTBEAT`` seconds (a model fit, dbt parsing,
Python loading the pipeline), one line saying what is still running and for how long. Only the CLI turns it on,
and only at the default log level (not ``--quiet``, which prints warnings and the summary only), so tests, the
schedule and the Dagster UI print nothing extra.
"""

from __future__ import annotations

import sys
import threading
import time

HEARTBEAT = 4.0  # seconds of silence before a "still running" line

_current: Progress | None = None


class Progress:
    """The run's terminal progress: ``say`` prints a line, ``doing`` names what runs now, ``touch`` notes that
    something else printed; a background thread fills silences longer than ``every`` seconds."""

    def __init__(self, enabled: bool = True, every: float = HEARTBEAT):
        self.enabled, self.every = enabled, every
        self._lock = threading.Lock()
        self._last = self._since = time.monotonic()
        self._label: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Progress:
        global _current
        if self.enabled:
            _current = self
            self._thread = threading.Thread(target=self._beat, name="crm-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        global _current
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if _current is self:
            _current = None

    def say(self, text: str) -> None:
        if self.enabled:
            with self._lock:
                sys.stderr.write(text + "\n")
                sys.stderr.flush()
                self._last = time.monotonic()

    def doing(self, label: str | None) -> None:
        """What runs from now on (None: nothing worth naming); the heartbeat names it and its time so far."""
        self._label, self._since = label, time.monotonic()

    def touch(self) -> None:
        self._last = time.monotonic()

    def _beat(self) -> None:
        while not self._stop.wait(0.2):
            now = time.monotonic()
            if self._label and now - self._last >= self.every:
                self.say(f"  ... {self._label} ({now - self._since:.0f} s so far)")


def doing(label: str | None) -> None:
    """Name what runs now in the active ``Progress`` (no-op when none is active)."""
    if _current is not None:
        _current.doing(label)


def touch() -> None:
    """Something was printed: restart the active ``Progress``'s silence clock (no-op when none is active)."""
    if _current is not None:
        _current.touch()


def active() -> bool:
    return _current is not None


def say(text: str) -> None:
    """Print a progress line through the active ``Progress`` (nothing when none is active: --quiet, tests)."""
    if _current is not None:
        _current.say(text)
