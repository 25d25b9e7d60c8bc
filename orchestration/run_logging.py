"""Where a CLI run's log lines go: short lines on the terminal, everything in the run's log file.

Dagster's default console logger prints each failure with its exception chain and up to 40 stack frames, and
one more error line for every step it then skips. On the terminal (unless ``--log-level DEBUG``) the
``console`` logger here prints each record on one line, without error text or frames, and leaves failures to
the CLI's summary (one line per failed step). The ``file`` logger writes every record in full (exception text,
stack frames) to ``<warehouse folder>/logs/run_<run_id>.log`` (folder 0700, file 0600), after the PII scrub.
The Dagster UI keeps the full events as before.

At INFO the terminal also gets a line when each asset step starts (``[3/14] dbt_models: dbt build of ...``, from
the asset graph: ``run_log.asset_steps``), and every line it prints tells ``progress`` that the run is not silent.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import dagster as dg

from data_quality.pii import scrub_text
from orchestration import progress

FORMAT = "%(asctime)s - dagster - %(levelname)s - %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"
_open_handlers: dict[str, logging.Handler] = {}


def run_log_path(warehouse_path: str | Path, run_id: str) -> Path:
    return Path(warehouse_path).resolve().parent / "logs" / f"run_{run_id}.log"


class _OneLine(logging.Formatter):
    """The record's first paragraph on one line (the error text and stack frames that Dagster appends to an
    event's message, and the explanations some libraries add, are left to the run log), scrubbed."""

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, STEP_LINE, False):
            return record.getMessage()
        text = super().format(record).split("\n\n", 1)[0]
        return scrub_text(" ".join(text.split()))


class _Scrubbed(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return scrub_text(super().format(record))


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (pytest's capture, a redirect)."""

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        progress.touch()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


class _QuietErrors(logging.Filter):
    """Errors are the CLI summary's job: the failure (with its frames) and the skipped-step lines stay off."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


STEP_LINE = "crm_step_line"  # set on a record the step filter rewrote: printed as it is, without the prefix


class _StepLines(logging.Filter):
    """Passes records at ``level`` and above; turns each step start (a DEBUG event) into a short line of its own
    for an asset step (``[3/14] dbt_models: dbt build of ...``) and tells ``progress`` what runs now."""

    def __init__(self, steps: dict, level: int):
        super().__init__()
        self.steps, self.level, self.started = steps, level, 0

    def filter(self, record: logging.LogRecord) -> bool:
        event = (getattr(record, "dagster_meta", None) or {}).get("dagster_event")
        kind = getattr(event, "event_type_value", None)
        if kind == "STEP_START":
            step = self.steps.get(event.step_key)
            if step is None:  # a check: not numbered, named by the heartbeat if it takes long
                progress.doing(f"check {event.step_key}")
                return False
            self.started += 1
            label = f"[{self.started}/{len(self.steps)}] {step.key}"
            progress.doing(label)
            record.msg, record.args = f"{label}: {step.describe()}", ()
            setattr(record, STEP_LINE, True)
            return self.level <= logging.INFO
        if kind in ("STEP_SUCCESS", "STEP_FAILURE"):
            progress.doing("Dagster: between steps")
        return record.levelno >= self.level


@dg.logger(
    config_schema={"log_level": dg.Field(str, is_required=False, default_value="INFO")},
    description="One line per record on stderr; errors left to the CLI's summary (full text in the run log).",
)
def terminal_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    from orchestration.run_log import asset_steps

    level = logging.getLevelName(init_context.logger_config["log_level"].upper())
    logger = logging.Logger("crm_potential.terminal", level=logging.DEBUG)  # step starts are DEBUG events
    handler = _Stderr()
    handler.setFormatter(_OneLine(FORMAT, DATE_FORMAT))
    handler.addFilter(_QuietErrors())
    handler.addFilter(_StepLines(asset_steps(init_context.job_def) if init_context.job_def else {}, level))
    logger.addHandler(handler)
    return logger


@dg.logger(
    config_schema={"path": str, "log_level": dg.Field(str, is_required=False, default_value="INFO")},
    description="Every record in full (errors with their stack frames), scrubbed, in the run's log file.",
)
def file_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    path = Path(init_context.logger_config["path"])
    logger = logging.Logger("crm_potential.run_file", level=init_context.logger_config["log_level"].upper())
    handler = _open_handlers.get(str(path))
    if handler is None:
        handler = logging.FileHandler(open_private(path), encoding="utf-8")
        handler.setFormatter(_Scrubbed(FORMAT, DATE_FORMAT))
        _open_handlers[str(path)] = handler
    logger.addHandler(handler)
    return logger


def open_private(path: Path) -> Path:
    """Create the log file 0600 in a 0700 folder (it may name files and columns of personal data)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    return path


def append(path: Path, text: str) -> None:
    """Add a scrubbed note to the run log (the CLI's summary, a traceback outside Dagster)."""
    with open(open_private(path), "a", encoding="utf-8") as fh:
        fh.write(scrub_text(text).rstrip("\n") + "\n")


def close(path: Path) -> None:
    handler = _open_handlers.pop(str(path), None)
    if handler is not None:
        handler.close()


def logger_defs(log_level: str) -> dict[str, dg.LoggerDefinition]:
    """The CLI run's loggers: Dagster's colored console logger (full errors) at DEBUG, else the quiet one."""
    console = dg.colored_console_logger if log_level.upper() == "DEBUG" else terminal_logger
    return {"console": console, "file": file_logger}
