"""A failed run in one screen: one actionable line per failed step or check.

Dagster's failure events carry the raw exception text and its stack frames; those go to the run log and the
Dagster UI. The terminal and ``pipeline_runs.message`` get one sentence per failed step: which step or rule,
which file, what to do. Known exception types are mapped to sentences by ``SENTENCES`` (first match wins);
anything else is shown as ``<ExceptionClass>: <first line>``. Every line passes the PII scrub. A failed
``column_rules`` dbt test (every not-null and range rule of a model in one test) names the columns, the rules
and how many rows break each (``column_rules_failures``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from data_quality.pii import scrub_text

PUBLICATION_STEP = "serving__publication"
# DuckDB stops at its own limit (an operator that cannot spill to disk: 10M customers' interactions at 3GB)
DUCKDB_MEMORY = ("DuckDB reached its memory limit: raise CRM_DUCKDB_MEMORY_LIMIT (3GB by default) if this machine has "
                 "memory to spare (about half of it leaves room for the models), or run on a larger machine")
_DUCKDB_OUT_OF_MEMORY = re.compile(r"failed to allocate data of size|Out of Memory Error", re.I)
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
    ("OutOfMemoryException", "", "{memory}"),
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
                                   pid=f" (process {pid.group(1)})" if pid else "", memory=DUCKDB_MEMORY)
    return f"{cls_name}: {first_line(raw)}"


def dbt_sentence(message: str) -> str:
    """dbt's failure, from the errors dagster-dbt parsed out of dbt's log: the model that could not be built
    (and DuckDB's reason), or how many tests failed (each is a failed check line of its own)."""
    log = re.search(r"dbt debug log: (\S+?)\.?\s*$", message, re.M)
    where = f"; dbt log: {log.group(1)}" if log else ""
    errors = re.search(r"(?:\w+ )?Error in (model|seed|snapshot|macro|test) (\S+)[^\n]*\n+\s*([^\n]+)", message)
    if errors:
        memory = f"; {DUCKDB_MEMORY}" if _DUCKDB_OUT_OF_MEMORY.search(errors.group(3)) else ""
        return (f"dbt could not build {errors.group(1)} {errors.group(2)}: {first_line(errors.group(3), 200)}"
                f"{memory}{where}")
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


COLUMN_RULES_TEST = "column_rules_"  # the prefix of every column_rules test's name (and Dagster check's)
_RULE_WORDS = {"not_null": "null", "min": "below its minimum", "max": "above its maximum",
               "finite": "not finite (NaN or Infinity)"}


def column_rules_failures(warehouse: str | Path, step: str, check_name: str) -> list[tuple] | None:
    """The broken rules of a failed ``column_rules`` test, as its rows (model, column, rule, rows, rules file), or
    None when they cannot be read. The test stores nothing (so a night on which every rule holds pays nothing
    for this); after the run, its compiled SQL in the step's ``run_results.json`` is run again on the warehouse,
    read-only. Its rows are counts and names from the yml, never a value from the data."""
    import duckdb

    from orchestration.dbt_project import step_target_path

    try:
        results = json.loads((step_target_path(warehouse, step) / "run_results.json").read_text())["results"]
        sql = next(r["compiled_code"] for r in results
                   if r["unique_id"].startswith("test.") and r["unique_id"].split(".")[2] == check_name)
        with duckdb.connect(str(warehouse), read_only=True) as con:
            return [tuple(row) for row in con.execute(sql).fetchall()]
    except Exception:  # no artifacts, no warehouse, a lock: the line keeps dbt's count instead
        return None


def column_rules_sentence(rows: list[tuple], shown: int = 6) -> str:
    """``rows`` of a column_rules test as one sentence: each broken rule with its column and row count, where
    the rules are declared, and what to do."""
    parts = []
    for model, column, rule, n, _ in rows[:shown]:
        name, _, bound = str(rule).partition(" ")
        words = _RULE_WORDS.get(name, name) + (f" {bound}" if bound else "")
        parts.append(f"{model}.{column} {words} in {int(n):,} row{'' if int(n) == 1 else 's'}")
    more = f" and {len(rows) - shown} more broken rule(s)" if len(rows) > shown else ""
    models = sorted({str(row[0]) for row in rows})
    files = sorted({f"dbt_project/{row[4]}" for row in rows if row[4]})
    return ("; ".join(parts) + more + (f" (column rules in {', '.join(files)})" if files else "")
            + f": fix what builds {', '.join(models)}, or the rule if these values are right")


@dataclass
class RunOutcome:
    """What a finished run's events say: failure lines, and whether the serving file was swapped in."""

    lines: list[str] = field(default_factory=list)
    published: bool = False


def run_outcome(events, warehouse: str | Path | None = None) -> RunOutcome:
    """One line per failed step and failed check, in the order they happened. With the run's ``warehouse``, a
    failed column_rules check says which columns broke which rules in how many rows."""
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
            broken = (column_rules_failures(warehouse, event.step_key, data.check_name)
                      if warehouse and data.check_name.startswith(COLUMN_RULES_TEST) and not data.description else None)
            detail = (": " + first_line(data.description, limit=600) if data.description else
                      ": " + first_line(column_rules_sentence(broken), limit=600) if broken else
                      f" (dbt test: {rows.value:,} failing row(s))" if rows is not None else "")
            warn = "warning: " if str(getattr(data.severity, "value", data.severity)).upper() == "WARN" else ""
            outcome.lines.append(f"{warn}check {data.check_name} on {data.asset_key.to_user_string()} failed{detail}")
        elif kind in ("RUN_FAILURE", "PIPELINE_FAILURE"):  # the enum value is still PIPELINE_FAILURE
            run_error = getattr(data, "error", None)
    if not step_failed and run_error is not None:
        outcome.lines.append("run: " + step_sentence(run_error))
    return outcome
