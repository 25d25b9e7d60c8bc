"""A failed run in one screen: one actionable line per failed step or check.

Dagster's failure events carry the raw exception text and its stack frames; those go to the run log and the
Dagster UI. The terminal and ``pipeline_runs.message`` get one sentence per failed step: which step or rule,
which file, what to do. Known exception types are mapped to sentences by ``SENTENCES`` (first match wins);
anything else is shown as ``<ExceptionClass>: <first line>``. Every line passes the PII scrub.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from data_quality.pii import scrub_text

PUBLICATION_STEP = "serving__publication"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

# (exception class name, pattern its message must match or "", sentence). In the sentence: {m} the message's
# first line, {path} the first quoted path in it, {pid} a process id it names.
SENTENCES: list[tuple[str, str, str]] = [
    ("IOException", r"Could not set lock", "the DuckDB file {path} is in use by another process{pid}: close the "
     "program holding it (a notebook or BI tool with a write connection, another run) and run again"),
    ("IOException", r"No space left", "the disk is full while writing {path}: free space and run again"),
    ("IOException", "", "DuckDB could not read or write {path} ({m}): check the path, its permissions and the "
     "free disk space"),
    ("ParserException", "", "DuckDB could not parse a statement this step built (a path or name with a quote in "
     "it?): the statement is in the run log; please report it"),
    ("CatalogException", "", "a table this step reads is missing ({m}): if the warehouse was built by an older "
     "version, run again with a fresh --warehouse; else please report it"),
    ("BinderException", r"Referenced column|not found", "a column this step reads is missing ({m}): if the "
     "warehouse was built by an older version, run again with a fresh --warehouse; else please report it"),
    ("BinderException", "", "DuckDB refused a statement this step built ({m}): please report it with the run log"),
    ("ConversionException", "", "DuckDB could not convert a value the data contract let through ({m}): please "
     "report it with the run log; the rows' file is named above"),
    ("InvalidInputException", "", "DuckDB refused an input value ({m}): please report it with the run log"),
    ("OutOfMemoryException", "", "DuckDB ran out of memory: lower CRM_DUCKDB_MEMORY_LIMIT (now part of the "
     "process's memory) or run on a machine with more memory"),
    ("MemoryError", "", "the run ran out of memory: run on a machine with more memory or fewer customers"),
    ("BtydFitError", "", "the value model (BTYD) could not be fitted to this order history ({m}): look for "
     "extreme amounts or very few repeat buyers in the orders file"),
    ("ChurnTrainingError", "", "the churn model could not be trained: {m}"),
    ("ActionRulesError", "", "the next-best-action rules are not usable: {m} (CRM_ACTION_RULES)"),
    ("SettingsError", "", "a run parameter is not usable: {m}"),
    ("ValueError", r"infinity|NaN|too large", "a model received a number that is not finite ({m}): such rows "
     "should have been quarantined; please report it with the run log"),
    ("PermissionError", "", "permission denied ({m}): check the owner and mode of the file or folder"),
    ("FileNotFoundError", "", "a file is missing ({m})"),
    ("IsADirectoryError", "", "a folder is where a file should be written ({m}): move it away and run again"),
    ("NotADirectoryError", "", "a file is where a folder should be ({m}): move it away and run again"),
    ("OSError", r"No space left", "the disk is full ({m}): free space and run again"),
]


def first_line(message: str, limit: int = 300) -> str:
    """The message without its ``module.Class: `` prefix, on one line, scrubbed, at most ``limit`` chars."""
    text = _ANSI.sub("", message or "").strip()
    text = re.sub(r"^[\w.]+(?:Error|Exception|Failure|Interrupt)\w*: ", "", text)
    text = re.sub(r"^[A-Z][A-Za-z ]*Error: ", "", text)  # DuckDB's "IO Error: ", "Parser Error: "
    line = " ".join(text.split("\n\n")[0].split())
    line = scrub_text(line)
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _chain(error) -> list:
    out = []
    while error is not None and len(out) < 10:
        out.append(error)
        error = error.cause or getattr(error, "context", None)
    return out


def sentence_for(cls_name: str, message: str) -> str:
    """The sentence for an exception of class ``cls_name`` with ``message`` (raw)."""
    raw = _ANSI.sub("", message or "")
    if cls_name == "DagsterDbtCliRuntimeError":
        return dbt_sentence(raw)
    for name, pattern, template in SENTENCES:
        if name == cls_name and (not pattern or re.search(pattern, raw)):
            path = re.search(r'"(/[^"]+)"|\'(/[^\']+)\'|(/[^\s:"\']+)', raw)
            pid = re.search(r"\(PID (\d+)\)", raw)
            return template.format(m=first_line(raw), path=(next(g for g in path.groups() if g) if path else "a file"),
                                   pid=f" (process {pid.group(1)})" if pid else "")
    return f"{cls_name}: {first_line(raw)}"


def dbt_sentence(message: str) -> str:
    """dbt's failure, from the errors dagster-dbt parsed out of dbt's log: the model that could not be built
    (and DuckDB's reason), or how many tests failed (each is a failed check line of its own)."""
    log = re.search(r"dbt debug log: (\S+?)\.?\s*$", message, re.M)
    where = f"; dbt log: {log.group(1)}" if log else ""
    errors = re.search(r"(?:\w+ )?Error in (model|seed|snapshot|macro|test) (\S+)[^\n]*\n+\s*([^\n]+)", message)
    if errors:
        return f"dbt could not build {errors.group(1)} {errors.group(2)}: {first_line(errors.group(3), 200)}{where}"
    failed = sorted(set(re.findall(r"Failure in test (\S+)", message)))
    if failed:
        return f"dbt stopped after {len(failed)} failed test(s), each named on its check line{where}"
    exit_code = re.search(r"exit code `?(\d+)", message)
    return f"dbt failed (exit code {exit_code.group(1) if exit_code else '?'}){where}"


def step_sentence(error, description: str | None = None) -> str:
    """One sentence for a failed step: a ``dg.Failure`` description (our own words) as is, else the first
    exception in the chain that ``SENTENCES`` knows, else the first one that is not Dagster's wrapper. dagster-dbt's
    error is a ``Failure`` too, but its description is dbt's whole output: it gets its own sentence."""
    chain = _chain(error)
    dbt = next((e for e in chain if e.cls_name == "DagsterDbtCliRuntimeError"), None)
    if dbt is not None:
        return dbt_sentence(_ANSI.sub("", description or dbt.message or ""))
    if description:
        return first_line(description, limit=600)
    if not chain:
        return "the step failed"
    known = {name for name, _, _ in SENTENCES} | {"DagsterDbtCliRuntimeError"}
    chosen = (next((e for e in chain if e.cls_name in known), None)
              or next((e for e in chain if not (e.cls_name or "").startswith("Dagster")), chain[-1]))
    return sentence_for(chosen.cls_name or "Error", chosen.message)


@dataclass
class RunOutcome:
    """What a finished run's events say: failure lines, and whether the serving file was swapped in."""

    lines: list[str] = field(default_factory=list)
    published: bool = False


def run_outcome(events) -> RunOutcome:
    """One line per failed step and failed check, in the order they happened."""
    outcome = RunOutcome()
    step_failed = False
    run_error = None
    for event in events:
        kind = event.event_type_value
        data = event.event_specific_data
        if kind == "STEP_SUCCESS" and event.step_key == PUBLICATION_STEP:
            outcome.published = True
        elif kind == "STEP_FAILURE":
            step_failed = True
            error = getattr(data, "error", None)
            if error is not None and error.cls_name == "DagsterAssetCheckFailedError":
                continue  # a blocking check stopped the step: the check's own line says which and why
            user = getattr(data, "user_failure_data", None)
            outcome.lines.append(f"{event.step_key}: "
                                 + step_sentence(getattr(data, "error", None), user.description if user else None))
        elif kind == "ASSET_CHECK_EVALUATION" and not data.passed:
            rows = data.metadata.get("dagster_dbt/failed_row_count")
            detail = (": " + first_line(data.description, limit=600) if data.description else
                      f" (dbt test: {rows.value:,} failing row(s))" if rows is not None else "")
            warn = "warning: " if str(getattr(data.severity, "value", data.severity)).upper() == "WARN" else ""
            outcome.lines.append(f"{warn}check {data.check_name} on {data.asset_key.to_user_string()} failed{detail}")
        elif kind == "RUN_FAILURE":
            run_error = getattr(data, "error", None)
    if not step_failed and run_error is not None:
        outcome.lines.append("run: " + step_sentence(run_error))
    return outcome
