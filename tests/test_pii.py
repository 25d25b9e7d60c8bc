"""Personal data: nothing identifying is published, and erased customers vanish everywhere we keep data."""

from __future__ import annotations

import re
import shutil

import duckdb
import pytest

from data_quality.pii import (
    column_names_for_message, profile_pseudonymise, pseudonym_key, pseudonymise, scrub_reports, scrub_run_messages,
    scrub_text,
)
from orchestration.cli import main
from tests.conftest import run_args

slow = pytest.mark.slow

# one line of the sample's customers file, as a headerless file's message used to quote it
ROW = ("00000122, 2024-11-11 20:01:11, 2025-07-22 10:16:07, ben.garcia121@example.com, 0049-000000121, "
       "Ben Garcia, ES, ES-R4, ES-R4-C3, 68199, 1972-05-29, male, search, column13, column14, column15, true, sms")


def _text_values(db, schemas=None) -> set[str]:
    """Every text value in every table of a DuckDB file (optionally only some schemas)."""
    values: set[str] = set()
    with duckdb.connect(str(db), read_only=True) as con:
        cols = con.execute("select table_schema, table_name, column_name from information_schema.columns "
                           "where data_type = 'VARCHAR'").fetchall()
        for schema, table, column in cols:
            if schemas and schema not in schemas:
                continue
            values.update(r[0] for r in con.execute(
                f'select distinct "{column}" from "{schema}"."{table}" where "{column}" is not null').fetchall())
    return values


def _contains(values: set[str], needles: set[str]) -> set[str]:
    return {n for n in needles if any(n in v for v in values)}


def _holds(values: set[str], ids: set[str]) -> set[str]:
    """Ids present as a value, or inside a quarantined raw row (``customer_id=<id>;``)."""
    return (ids & values) | {i for i in ids if any(f"customer_id={i};" in v for v in values)}


@pytest.mark.parametrize("text, gone, kept", [
    (f"customers (x/customers.csv): required column(s) customer_id, created_at missing. Found columns: {ROW}. "
     "Add the column(s) to the file", ROW.split(", "), ["customers.csv", "customer_id, created_at missing",
                                                       "Add the column(s)", "<18 values not shown>"]),
    ("mail anna.schmidt+crm@example.co.uk or a.b@mail.example.org", ["anna.schmidt", "example.co.uk", "a.b@"],
     ["<e-mail>"]),
    ("call +49 170 1234567, (030) 123 45 67 or 0049-000000121 today", ["170 1234567", "123 45 67", "000000121"],
     ["call <number>", "today"]),
    ("Found columns: 122, 2024-11-11 20:01:11, Ben Garcia, DE. Add a header row", ["Ben Garcia", "122"],
     ["Found columns: <4 values not shown>. Add a header row"]),
    ("erasure of C-77 and 00000122 applied", ["C-77", "00000122"], ["erasure of <id> and <id> applied"]),
])
def test_scrub_text_masks_values_and_keeps_our_words(text, gone, kept):
    clean = scrub_text(text, ids=["C-77", "00000122"])
    assert not [g for g in gone if g in clean], clean
    assert not [k for k in kept if k not in clean], clean


@pytest.mark.parametrize("text", [
    "orders: 399 of 10,335 rows (3.86%, limit 1.00% OVER THE LIMIT) break the contract: 399 x negative amount, "
    "3 x unknown status, 2 x bad date (rows in quarantine.quarantine_orders)",
    "run aad3c4ae-4ba8-4299-9447-6925fbd25382 as of 2026-09-30, started 2026-11-29 05:51:02 +0000",
    "required column(s) customer_id, created_at missing. Found columns: id, name, e_mail, phone.",
    "cutoffs 2024-09-30, 2025-09-30, 2026-01-03; /tmp/pytest-of-root/pytest-12/test_x0/customers.csv",
    "check row_count_within_band on raw/interactions: 10.0x the rows of the last publication (CRM_ROW_COUNT_BAND)",
])
def test_scrub_text_leaves_messages_without_personal_data_alone(text):
    assert scrub_text(text) == text


def test_column_names_for_message_quotes_names_not_values():
    text = column_names_for_message(ROW.split(", "))
    assert text.startswith("ES, male, search, column13") and "look like values, not shown" in text
    assert not [v for v in ("00000122", "ben.garcia", "0049", "Ben Garcia", "1972", "68199") if v in text]
    assert column_names_for_message(["customer_id", "Email", "Amount EUR"]) == "customer_id, Email, Amount EUR"


def test_scrub_run_messages_and_kept_reports(tmp_path):
    con = duckdb.connect()
    con.execute("create schema ops; create table ops.pipeline_runs (run_id varchar, message varchar)")
    con.execute("insert into ops.pipeline_runs values ('r1', 'row of C-9: c9@example.com'), ('r2', 'fine'), "
                "('r3', null)")
    assert scrub_run_messages(con, ["C-9"]) == 1
    assert con.execute("select message from ops.pipeline_runs order by run_id").fetchall() == [
        ("row of <id>: <e-mail>",), ("fine",), (None,)]
    reports = tmp_path / "reports"
    (reports / "run1").mkdir(parents=True)
    page = ("<table><tr><td>1</td><td>C-9</td><td>A</td></tr><tr><td>2</td><td>C-10</td><td>A</td></tr></table>"
            "<p>C-9 moved up</p><img src='data:image/png;base64,C-9AAAA'>")
    (reports / "run_1.html").write_text(page)
    (reports / "run1" / "quality.html").write_text("<p>C-10 only</p>")
    (reports / "run1" / "plot.png").write_bytes(b"\x89PNG C-9")
    before = (reports / "run1" / "quality.html").stat().st_ino
    assert scrub_reports(reports, ["C-9"]) == {"files": 1, "rows": 1}
    assert (reports / "run_1.html").read_text() == (
        "<table><tr><td>2</td><td>C-10</td><td>A</td></tr></table><p>[erased] moved up</p>"
        "<img src='data:image/png;base64,C-9AAAA'>")
    assert (reports / "run1" / "quality.html").stat().st_ino == before  # untouched file, not rewritten
    assert scrub_reports(reports, ["C-9"]) == {"files": 0, "rows": 0}  # same requests: nothing read again


@slow
def test_published_tables_hold_no_clear_text_personal_data(small_sample, two_publications):
    work = two_publications[0]
    people = duckdb.execute(
        f"select email, phone, full_name from read_csv('{small_sample}/customers.csv', all_varchar=true) limit 200"
    ).fetchall()
    published = _text_values(work / "serving.duckdb")
    assert not [v for v in published if re.search(r"[^@\s]+@[^@\s]+\.[a-z]{2,}", v, re.I)]
    assert not _contains(published, {p[2] for p in people if p[2]})
    assert not _contains(published, {p[1].replace(" ", "")[-9:] for p in people if p[1]})
    with duckdb.connect(str(work / "serving.duckdb"), read_only=True) as con:
        profile_cols = {r[0] for r in con.execute("describe customer_profile").fetchall()}
    assert not {"customer_id", "customer_key"} & profile_cols and "profile_key" in profile_cols
    assert oct((work / ".pseudonym.key").stat().st_mode & 0o777) == "0o600"


@slow
def test_erased_customers_leave_no_trace(small_sample, two_publications, tmp_path):
    work = tmp_path / "work"  # two published nights, then the erasure request, then the next night
    shutil.copytree(two_publications[0], work)
    with duckdb.connect(str(work / "serving.duckdb"), read_only=True) as con:
        victims = [r[0] for r in con.execute(
            "select customer_id from customer_scores where potential_rank in (1, 100, 700)").fetchall()]
        top = con.execute("select customer_id from customer_scores where potential_rank = 1").fetchall()[0][0]
    report_before = work / "reports" / f"run_{two_publications[2]}.html"
    assert f">{top}<" in report_before.read_text()  # the report's top-customer tables name rank 1
    erase = tmp_path / "erase.csv"
    erase.write_text("customer_id\n" + "\n".join(victims) + "\n")
    assert main(run_args(small_sample, work, "--erase", str(erase))) == 0
    assert main(run_args(small_sample, work)) == 0  # the next nightly run, without the flag: still erased
    key = pseudonym_key(work / ".pseudonym.key")
    keys = set(pseudonymise(victims, key)) | set(profile_pseudonymise(victims, key))
    needles = set(victims) | keys
    # the earlier runs' reports (and every other kept page) no longer name them
    pages = list((work / "reports").rglob("*.html"))
    assert len(pages) >= 6 and report_before in pages
    for page in pages:
        text = page.read_text()
        assert not [n for n in needles if re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", text)], page
    assert not _holds(_text_values(work / "serving.duckdb"), needles)
    versions = list((work / ".serving-versions").glob("*.duckdb"))
    assert len(versions) == 3  # CRM_SERVING_VERSIONS: the three publications before the last of four runs
    for version in versions:
        assert not _holds(_text_values(version), needles), version
    # the warehouse keeps the ids only in the erasure register, which applies them on every run
    warehouse = _text_values(work / "warehouse.duckdb", schemas=["raw", "staging", "intermediate", "marts", "scores", "quarantine"])
    assert not _holds(warehouse, needles)
    with duckdb.connect(str(work / "warehouse.duckdb"), read_only=True) as con:
        assert sorted(r[0] for r in con.execute("select customer_id from ops.erasure_requests").fetchall()) == sorted(victims)
        assert not con.execute("select count(*) from ops.customer_pseudonyms where customer_id in (?, ?, ?)",
                               victims).fetchall()[0][0]
