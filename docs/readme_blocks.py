"""README's example output and model tables, regenerated from a real run instead of edited by hand.

README.md quotes what a run of the bundled sample prints and publishes: the summary `make run` ends with, and the
back-test tables of the value and churn models. Copied by hand they went stale with every model change, so they
sit between markers and this script writes them::

    <!-- generated: NAME (python docs/readme_blocks.py) -->
    ...
    <!-- end: NAME -->

Blocks (``BLOCKS``):

- ``run-summary``: the summary at the end of ``crm-potential run``'s standard output (from its "Published N
  customer scores" line on), as a code block: the run id cut to its first 8 characters + ``-...``, absolute
  paths of the run's folders replaced by ``/path/to/repo``, the top-10 table cut to 3 rows and the stage table to
  the first two and the last stage (``...`` between);
- ``value-models`` and ``churn-model``: the caption and table of each model section, from ``model_performance``
  of the run the serving database publishes (SQL below).

Usage::

    python docs/readme_blocks.py --run            # run the bundled sample in a temporary folder, rewrite the blocks
    python docs/readme_blocks.py --serving data/serving.duckdb --run-output run.txt   # from a run made before
    python docs/readme_blocks.py --check [--run]  # exit 1 if a block's structure differs; README is not written

``--run`` runs ``crm-potential run`` on ``data/sample`` (generated as ``make sample`` does when missing) with a
warehouse, serving database, model registry and Dagster home of its own under a temporary folder laid out like the
repository (``data/``, ``models/``, ``.dagster/``), deleted afterwards; ``CRM_*`` settings of the environment and
a ``crm-potential.toml`` are left out (except ``CRM_MODEL_THREADS``, which does not change the scores), so the
blocks show the defaults, as on a fresh clone. It takes a minute or two. Without ``--run`` the tables come from
``--serving`` (default ``data/serving.duckdb``, what ``make run`` published) and the summary from ``--run-output``,
the saved standard output of that run (``make run | tee run.txt``); without ``--run-output`` the summary block is
left as it is (and not checked).

What ``--check`` compares (``shape``): the numbers of a run change with every model or data change and are not
checked; the form of each block is. Per line, after trailing blanks are dropped and runs of blanks made one:
dates become ``<date>``, the short run id ``<run>``, every other number ``#``. A row of the top-customers table
becomes ``<customer row: N cells>`` (which customers lead is data, the columns are form). The rows of a markdown
table are compared as a set, since their order follows the metrics. So a changed caption or heading, a line or
column added or lost, a model that appears, disappears or changes role (champion, chosen BTYD model, published
churn model), an empty cell that fills or a stage that moves are reported, and a new value is not. ``shape(text,
labels=False)`` also drops the model names, the roles and the caption's account of the model choice: the form
any run has, whatever it chose; the tests compare README with the blocks of a smaller sample that way.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SAMPLE = ROOT / "data" / "sample"
SAMPLE_ARGS = ("--customers", "5000", "--seed", "42")  # the Makefile's SAMPLE_CUSTOMERS, SAMPLE_SEED
REPO = "/path/to/repo"
SCRIPT = "python docs/readme_blocks.py"
BLOCKS = ("run-summary", "value-models", "churn-model")
TOP_ROWS = 3  # rows of the top-customers table shown
WIDTH = 110  # README's prose lines
KEEP_ENV = ("CRM_MODEL_THREADS",)


class BlockError(Exception):
    """A block cannot be made or found; the message says which and what to do."""


def start_marker(name: str) -> str:
    return f"<!-- generated: {name} ({SCRIPT}) -->"


def end_marker(name: str) -> str:
    return f"<!-- end: {name} -->"


# --- the run summary ---------------------------------------------------------------------------------------------

PUBLISHED = re.compile(r"^Published [\d,]+ customer scores as of \S+ \(run ([0-9a-f-]{36}), [\d.]+s\)$")


def render_summary(stdout: str, paths: dict[str, str]) -> str:
    """The README form of a run's summary: ``stdout`` is what ``crm-potential run`` printed on standard output;
    ``paths`` maps absolute path prefixes of that run to what README shows (the longest prefix wins)."""
    lines = [line.rstrip() for line in stdout.splitlines()]
    starts = [i for i, line in enumerate(lines) if PUBLISHED.match(line)]
    if not starts:
        raise BlockError("run-summary: the run output has no 'Published N customer scores as of ...' line: give the "
                         "standard output of a `crm-potential run` that published the latest night")
    lines = lines[starts[-1]:]
    run_id = PUBLISHED.match(lines[0]).group(1)
    text = "\n".join(lines).replace(run_id, run_id[:8] + "-...")
    for prefix in sorted(paths, key=len, reverse=True):
        text = text.replace(prefix, paths[prefix])
    out: list[str] = []
    section: list[str] = []
    kind = None

    def close() -> None:
        if kind == "top":  # the column header, then the first rows
            out.extend(section[:1 + TOP_ROWS] + (["  ..."] if len(section) > 1 + TOP_ROWS else []))
        elif kind == "stages":
            out.extend(section if len(section) <= 3 else section[:2] + ["  ...", section[-1]])
        section.clear()

    for line in text.splitlines():
        if kind and line.startswith("  "):
            section.append(line)
            continue
        close()
        kind = "top" if line.startswith("Top ") else "stages" if line.startswith("Stages ") else None
        out.append(line)
    close()
    return "```\n" + "\n".join(out).strip("\n") + "\n```"


# --- the model tables, from the serving database -----------------------------------------------------------------

BTYD_NAMES = {"bgnbd_gg": "BG/NBD", "mbgnbd_gg": "MBG/NBD", "pareto_nbd_gg": "Pareto/NBD"}
CHURN_REASONS_MODEL = "churn_hgb"  # the reasons always come from the gradient-boosting model (ml/churn.py)
RANKING_ONLY = {"churn_recency"}  # days since the last purchase: a ranking, so its Brier and log loss mean nothing

# one row per model of the published run: its metrics of one task as columns, and its roles
METRICS_SQL = """
with run as (select any_value(run_id) as run_id from customer_scores)
select model_name,
       bool_or(is_champion) filter (where task = $task) as champion,
       coalesce(bool_or(is_champion) filter (where task = 'btyd_selection'),  -- chosen on the selection window,
                bool_or(is_champion) filter (where task = 'clv_purchases')) as chosen_btyd,  -- else on the test window
       min(test_window_start) filter (where task = $task) as test_start,
       min(test_window_end) filter (where task = $task) as test_end,
       {columns}
from model_performance join run using (run_id)
group by model_name
having count(*) filter (where task = $task) > 0
order by champion desc, {order} desc nulls last, model_name
"""


def _metrics(con, task: str, columns: dict[str, tuple[str, str]], order: str) -> list[dict]:
    """``columns``: output name -> (task, metric)."""
    select = ",\n       ".join(f"max(value) filter (where task = '{t}' and metric = '{m}') as {name}"
                               for name, (t, m) in columns.items())
    cur = con.execute(METRICS_SQL.format(columns=select, order=order), {"task": task})
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def _published(con) -> tuple[str, object, int]:
    rows = con.execute("select any_value(run_id), any_value(as_of_date), count(*) from customer_scores").fetchall()
    if not rows or rows[0][2] == 0:
        raise BlockError("the serving database publishes no customer_scores: run the sample first (--run)")
    return rows[0]


def _num(value, digits: int) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|"

    return "\n".join([line(header), "|" + "|".join("---" for _ in header) + "|", *(line(r) for r in rows)])


def _listing(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _caption(text: str) -> str:
    """A caption wrapped as README's prose is (markdown joins the lines)."""
    return textwrap.fill(text, WIDTH, break_long_words=False, break_on_hyphens=False)


def _percent(ratio: float) -> str:
    return f"{round(abs(1 - ratio) * 100)} %"


def render_value_models(con) -> str:
    """The value models' back-test on the test window (``clv_spend``, ``clv_purchases``) and the BTYD choice on the
    selection window (``btyd_selection``) of the published run."""
    _, as_of, customers = _published(con)
    rows = _metrics(con, "clv_spend", {
        "gini": ("clv_spend", "normalised_gini"), "spearman": ("clv_spend", "spearman"),
        "ratio": ("clv_spend", "total_ratio"), "ratio_corrected": ("clv_spend", "total_ratio_corrected"),
        "spend_cover": ("clv_spend", "interval_coverage"), "spend_prob": ("clv_spend", "interval_probability"),
        "buy_cover": ("clv_purchases", "interval_coverage"), "buy_prob": ("clv_purchases", "interval_probability"),
        "buy_ratio": ("clv_purchases", "total_ratio"),
        "buy_ratio_corrected": ("clv_purchases", "total_ratio_corrected"),
        "sel_deviance": ("btyd_selection", "poisson_deviance"), "sel_ratio": ("btyd_selection", "total_ratio"),
    }, order="gini")
    if not rows:
        raise BlockError("value-models: model_performance holds no value back-test (task clv_spend) for the published "
                         "run: the sample is too small for one (README's tables are of the bundled sample)")
    chosen = next((r for r in rows if r["chosen_btyd"]), None)
    table = []
    for r in rows:
        roles = [role for role, on in (("champion", r["champion"]), ("chosen BTYD", r is chosen)) if on]
        ratio = _num(r["ratio"], 2) + ("" if r["ratio_corrected"] is None else
                                        f" (corrected {_num(r['ratio_corrected'], 2)})")
        cover = (f"spend {_num(r['spend_cover'], 3)} ({_num(r['spend_prob'], 3)}), purchases "
                 f"{_num(r['buy_cover'], 3)} ({_num(r['buy_prob'], 3)})" if r["spend_cover"] is not None else "")
        table.append([r["model_name"] + (f" ({', '.join(roles)})" if roles else ""), _num(r["gini"], 3),
                      _num(r["spearman"], 3), ratio, cover])
    choice = "no BTYD model fitted"
    if chosen is not None:
        name = BTYD_NAMES.get(chosen["model_name"], chosen["model_name"])
        others = sorted(r["sel_deviance"] for r in rows if r is not chosen and r["sel_deviance"] is not None)
        if chosen["sel_deviance"] is None:
            choice = f"{name} chosen on the test window (no selection window before it)"
        else:
            choice = (f"{name} chosen on the selection window with deviance {chosen['sel_deviance']:.2f}"
                      + (f" against {_listing([f'{d:.2f}' for d in others])}" if others else ""))
        corrected = [f"{what} {_num(r0, 2)} -> {_num(r1, 2)}" for what, r0, r1 in (
            ("purchases", chosen["buy_ratio"], chosen["buy_ratio_corrected"]),
            ("spend", chosen["ratio"], chosen["ratio_corrected"])) if r1 is not None]
        if corrected:
            choice += f"; totals corrected by the selection window's bias ({', '.join(corrected)} on the test window)"
        elif chosen["sel_ratio"] is not None and chosen["buy_ratio"] is not None:
            def said(ratio: float) -> str:
                return f"{'under' if ratio < 1 else 'over'}-predicted by {_percent(ratio)}"
            choice += (f"; no correction: the selection window {said(chosen['sel_ratio'])}, the test window "
                       f"{said(chosen['buy_ratio'])}")
    test = rows[0]
    caption = (f"On the bundled sample ({customers:,} customers, as of {as_of}, test window "
               f"{test['test_start']}..{test['test_end']}; {choice}):")
    header = ["model", "normalised Gini", "Spearman", "predicted / actual spend",
              "80 % interval coverage (model probability)"]
    return _caption(caption) + "\n\n" + _table(header, table) + "\n"


def render_churn_model(con) -> str:
    """The churn models' back-test (``task = 'churn'``) of the published run: the published model (the back-test
    winner), the reasons model and the baselines."""
    rows = _metrics(con, "churn", {name: ("churn", name) for name in (
        "roc_auc", "pr_auc", "brier", "log_loss", "top_decile_lift", "n_customers", "base_rate")}, order="roc_auc")
    if not rows:
        raise BlockError("churn-model: model_performance holds no churn back-test for the published run: the sample is "
                         "too small for one (README's tables are of the bundled sample)")
    table = []
    for r in rows:
        roles = (["published: back-test winner"] if r["champion"] else []) + (
            ["reasons"] if r["model_name"] == CHURN_REASONS_MODEL else [])
        ranking = r["model_name"] in RANKING_ONLY
        table.append([r["model_name"] + (f" ({'; '.join(roles)})" if roles else ""), _num(r["roc_auc"], 3),
                      _num(r["pr_auc"], 3), "" if ranking else _num(r["brier"], 3),
                      "" if ranking else _num(r["log_loss"], 3), _num(r["top_decile_lift"], 2)])
    first = rows[0]
    caption = (f"On the bundled sample (test cutoff {first['test_start']}, {int(first['n_customers']):,} customers, "
               f"{round(first['base_rate'] * 100)} % churned):")
    header = ["model", "ROC AUC", "PR AUC", "Brier", "log loss", "top-decile lift"]
    return _caption(caption) + "\n\n" + _table(header, table) + "\n"


TABLES: dict[str, Callable] = {"value-models": render_value_models, "churn-model": render_churn_model}


def render_tables(serving: Path) -> dict[str, str]:
    import duckdb

    if not Path(serving).exists():
        raise BlockError(f"no serving database at {serving}: run `make run` first, or pass --serving PATH or --run")
    con = duckdb.connect(str(serving), read_only=True)  # open, read, close
    try:
        return {name: render(con) for name, render in TABLES.items()}
    finally:
        con.close()


# --- README ------------------------------------------------------------------------------------------------------

def _span(text: str, name: str) -> tuple[int, int]:
    """Where the block's contents start in ``text`` (after its start marker's line) and where its end marker's line
    starts; each marker must be a line of its own, there once, the start before the end."""
    start, end = start_marker(name) + "\n", "\n" + end_marker(name) + "\n"
    padded = "\n" + text + ("" if text.endswith("\n") else "\n")
    if padded.count("\n" + start) != 1 or padded.count(end) != 1 or padded.index(end) < padded.index(start):
        raise BlockError(f"README.md must hold the block {name} exactly once: a line '{start.strip()}', the "
                         f"block, then a line '{end.strip()}'")
    # padded[k] is text[k - 1]: the start line begins at the index of its "\n" in padded, the end marker one after
    return padded.index("\n" + start) + len(start), padded.index(end)


def read_blocks(text: str) -> dict[str, str]:
    """README's blocks by name (the text between the markers, blank lines around it dropped)."""
    found = {}
    for name in BLOCKS:
        begin, end = _span(text, name)
        found[name] = text[begin:end].strip("\n")  # text[end - 1] is the newline before the end marker
    return found


def write_blocks(text: str, blocks: dict[str, str]) -> str:
    """``text`` with the given blocks' contents replaced (and a blank line before the end marker); everything
    outside the markers is kept as it is."""
    read_blocks(text)
    for name, body in blocks.items():
        begin, end = _span(text, name)
        text = text[:begin] + body.strip("\n") + "\n\n" + text[end:]
    return text


DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
RUN = re.compile(r"(?<![0-9a-f])[0-9a-f]{8}-\.\.\.")  # a short run id, also in run_<id>.log
NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?")
SEPARATOR = re.compile(r"\s{2,}")  # between the columns of the CLI's tables (a segment name holds one blank)


def _form(line: str) -> str:
    line = RUN.sub("<run>", DATE.sub("<date>", line))
    return re.sub(r"\s+", " ", NUMBER.sub("#", line)).strip()


def _logical_lines(text: str) -> list[str]:
    """The block's lines, trailing blanks dropped, a paragraph's wrapped lines joined (outside code blocks and
    tables: markdown joins them too, so where a caption wraps is not its form)."""
    out: list[str] = []
    fenced = False
    for line in text.strip("\n").splitlines():
        line = line.rstrip()
        prose = not fenced and line and not line.startswith(("|", "```"))
        if prose and out and out[-1] and not out[-1].startswith(("|", "```")):
            out[-1] += " " + line
        else:
            out.append(line)
        fenced ^= line.startswith("```")
    return out


def shape(text: str, labels: bool = True) -> list[str]:
    """The form of a block, as ``--check`` compares it (see the module's docstring)."""
    out: list[str] = []
    rows: list[str] = []  # the body of the markdown table being read
    in_table = in_top = False
    for line in _logical_lines(text) + [""]:
        if in_table and line.startswith("|"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            rows.append(" | ".join(["<model>" if not labels else _form(cells[0])] + [_form(c) for c in cells[1:]]))
            continue
        if in_table:  # the table ended: its rows in a fixed order
            out.extend(sorted(rows))
            rows.clear()
            in_table = False
        if line.startswith("|") and set(line) <= set("|-: "):
            out.append(f"<separator: {line.count('|') - 1} cells>")
            in_table = True
            continue
        if in_top and line.startswith("  ") and line.strip() != "...":
            out.append(f"<customer row: {len(re.split(SEPARATOR, line.strip()))} cells>")
            continue
        in_top = line.startswith("  rank ") or (in_top and line.startswith("  "))
        line = _form(line)
        if not labels:
            line = re.sub(r"\b(" + "|".join(map(re.escape, BTYD_NAMES.values())) + r")\b", "<btyd>", line)
            line = re.sub(r"^(On the bundled sample \(.*?);.*\):$", r"\1; <choice>):", line)
        out.append(line)
    while out and out[-1] == "":
        out.pop()
    return out


def differences(readme: str, generated: str, labels: bool = True) -> list[str]:
    """How README's block differs in form from the generated one (a unified diff of their shapes), or []."""
    return list(difflib.unified_diff(shape(readme, labels), shape(generated, labels), "README.md", "generated",
                                     lineterm="", n=1))


# --- a run of the bundled sample ---------------------------------------------------------------------------------

def _cli(python: str) -> list[str]:
    script = Path(python).parent / "crm-potential"
    return [str(script)] if script.exists() else [python, "-c", "from orchestration.cli import main; "
                                                                 "raise SystemExit(main())"]


def run_sample(folder: Path) -> str:
    """``crm-potential run`` on the bundled sample into ``folder`` (laid out like the repository); its stdout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_") or k in KEEP_ENV}
    env["DAGSTER_HOME"] = str(folder / ".dagster")
    cli = _cli(sys.executable)
    source = SAMPLE
    if not (source / "customers.csv").exists():
        source = folder / "sample"
        print(f"readme_blocks: generating the bundled sample into {source} (as make sample does)", file=sys.stderr)
        subprocess.run([*cli, "generate", *SAMPLE_ARGS, "--out", str(source)], env=env, cwd=folder, check=True,
                       stdout=subprocess.DEVNULL)
    data = folder / "data"
    data.mkdir()
    print(f"readme_blocks: running the nightly job on {source} in {folder} (about a minute)", file=sys.stderr)
    done = subprocess.run([*cli, "run", "--source", str(source), "--warehouse", str(data / "warehouse.duckdb"),
                           "--serving", str(data / "serving.duckdb"), "--models", str(folder / "models")],
                          env=env, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise BlockError(f"the sample run failed (exit {done.returncode}); its messages are above")
    return done.stdout


# --- command line ------------------------------------------------------------------------------------------------

def generate(serving: Path, run_output: str | None, paths: dict[str, str]) -> dict[str, str]:
    blocks = render_tables(serving)
    if run_output is not None:
        blocks = {"run-summary": render_summary(run_output, paths), **blocks}
    return blocks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="readme_blocks.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="store_true", help="run the bundled sample in a temporary folder first")
    parser.add_argument("--serving", type=Path, default=ROOT / "data" / "serving.duckdb",
                        help="serving database to read the tables from (without --run; default data/serving.duckdb)")
    parser.add_argument("--run-output", type=Path, help="saved standard output of the run that published it")
    parser.add_argument("--check", action="store_true", help="only compare the blocks' structure; exit 1 if it differs")
    parser.add_argument("--readme", type=Path, default=README, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        read_blocks(args.readme.read_text())  # the markers are there before a minute is spent on a run
        if args.run:
            with tempfile.TemporaryDirectory(prefix="readme_blocks_") as tmp:
                folder = Path(tmp).resolve()
                output = run_sample(folder)
                blocks = generate(folder / "data" / "serving.duckdb", output, {str(folder): REPO})
        else:
            output = args.run_output.read_text() if args.run_output else None
            blocks = generate(args.serving, output, {str(ROOT): REPO})
            if output is None:
                print("readme_blocks: run-summary left as it is (no --run-output)", file=sys.stderr, flush=True)
        text = args.readme.read_text()  # read again: README may have been edited while the sample ran
        current = read_blocks(text)
    except (BlockError, OSError, subprocess.CalledProcessError) as exc:
        print(f"readme_blocks: {exc}", file=sys.stderr)
        return 1
    if args.check:
        failed = 0
        for name, body in blocks.items():
            diff = differences(current[name], body)
            print(f"{name}: {'structure differs (- README, + a run now):' if diff else 'ok'}")
            print("\n".join("  " + line for line in diff[2:]), end="\n" if diff else "")
            failed += bool(diff)
        return 1 if failed else 0
    updated = write_blocks(text, blocks)
    if updated != text:
        args.readme.write_text(updated)
    for name, body in blocks.items():
        print(f"{name}: {'unchanged' if current[name] == body.strip(chr(10)) else 'rewritten'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
