"""README's generated blocks (``docs/readme_blocks.py``): the run summary and the model tables are made from a
real run, README holds them between markers, and ``--check`` notices a block whose form no longer matches.

No pipeline run of its own: the blocks are rendered from the session's ``two_publications`` (its serving database,
and the summary that ``orchestration.cli._print_summary`` prints for its second run)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
from pathlib import Path

import duckdb
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("readme_blocks", ROOT / "docs" / "readme_blocks.py")
readme_blocks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(readme_blocks)

NOISE = "crm-potential: running the nightly job on /somewhere (run x)\n  dbt | Done. PASS=20 WARN=0 ERROR=0\n"


@pytest.fixture(scope="module")
def published(two_publications):
    """(work folder, run id, the run's stdout as the CLI prints it, the blocks rendered from that run)."""
    from orchestration.cli import _print_summary
    from orchestration.settings import PipelineSettings

    work, _, run_id = two_publications
    work = Path(work).resolve()
    settings = PipelineSettings.from_env(warehouse_path=str(work / "warehouse.duckdb"),
                                         serving_path=str(work / "serving.duckdb"))
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.setenv("DAGSTER_HOME", str(work / ".dagster"))  # the stage table reads the run's Dagster step stats
        _print_summary(settings, run_id, 12.3)
    stdout = NOISE + printed.getvalue()
    paths = {str(work / ".dagster"): "/path/to/repo/.dagster", str(work): "/path/to/repo/data"}
    blocks = {"run-summary": readme_blocks.render_summary(stdout, paths),
              **readme_blocks.render_tables(work / "serving.duckdb")}
    return work, run_id, stdout, blocks


def _query(serving: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(serving), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _table_rows(block: str) -> dict[str, list[str]]:
    """A rendered markdown table's body: label -> the other cells."""
    rows = [line.strip("|").split("|") for line in block.splitlines() if line.startswith("|")][2:]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows}


def test_readme_holds_each_block_once_with_no_path_or_run_id_of_the_machine_it_ran_on():
    current = readme_blocks.read_blocks((ROOT / "README.md").read_text())
    assert set(current) == set(readme_blocks.BLOCKS) and all(current.values())
    summary = current["run-summary"]
    assert re.findall(r"(?<![\w.])/[\w.-]+", summary) and \
        all(path.startswith(readme_blocks.REPO) for path in re.findall(r"(?<![\w.])/[^\s)]+", summary))
    assert not re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-", summary)  # run ids are shortened


@pytest.mark.slow
def test_the_summary_block_is_the_cli_summary_in_readme_form(published):
    work, run_id, stdout, blocks = published
    n, as_of = _query(work / "serving.duckdb", "select count(*), any_value(as_of_date) from customer_scores")[0]
    lines = blocks["run-summary"].splitlines()
    short = run_id[:8] + "-..."
    assert lines[0] == lines[-1] == "```"
    assert lines[1] == f"Published {n:,} customer scores as of {as_of} (run {short}, 12.3s)"
    assert lines[2:5] == ["  serving database : /path/to/repo/data/serving.duckdb",
                          "  warehouse        : /path/to/repo/data/warehouse.duckdb",
                          "  Dagster runs     : /path/to/repo/.dagster (make ui)"]
    assert f"  run log          : /path/to/repo/data/logs/run_{short}.log" in lines
    assert run_id not in blocks["run-summary"] and str(work) not in blocks["run-summary"]
    assert "dbt |" not in blocks["run-summary"] and all(line == line.rstrip() for line in lines)

    top = lines.index("Top 10 customers by potential:")
    assert lines[top + 1].split() == ["rank", "customer_id", "score", "tier", "clv", "churn", "rfm_segment",
                                      "next_best_action"]
    assert [line.split()[0] for line in lines[top + 2:top + 5]] == ["1", "2", "3"]
    assert lines[top + 5:top + 7] == ["  ...", ""]

    printed = [line.rstrip() for line in stdout.splitlines()]
    stages = printed[printed.index("Stages (seconds, rows out):") + 1:]
    assert len(stages) > 3
    shown = lines[lines.index("Stages (seconds, rows out):") + 1:-1]
    assert shown == stages[:2] + ["  ...", stages[-1]]

    with pytest.raises(readme_blocks.BlockError, match="no 'Published N customer scores as of ...' line"):
        readme_blocks.render_summary(NOISE + "\nAdded the night of 2026-08-31 to customer_scores_history ...\n", {})


@pytest.mark.slow
def test_the_model_tables_come_from_model_performance_of_the_published_run(published):
    work, run_id, _, blocks = published
    serving = work / "serving.duckdb"
    perf = f"from model_performance where run_id = '{run_id}'"

    value = _table_rows(blocks["value-models"])
    models = dict(_query(serving, f"select model_name, bool_or(is_champion) {perf} and task = 'clv_spend' group by 1"))
    chosen = _query(serving, f"select model_name {perf} and task = 'btyd_selection' and is_champion limit 1")[0][0]
    assert {label.split(" (")[0] for label in value} == set(models)
    champion = next(m for m, is_champion in models.items() if is_champion)
    assert f"{champion} (champion)" in value and f"{chosen} (chosen BTYD)" in value
    gini = _query(serving, f"select value {perf} and task = 'clv_spend' and model_name = '{champion}' "
                           "and metric = 'normalised_gini'")[0][0]
    assert value[f"{champion} (champion)"][0] == f"{gini:.3f}"
    assert value[f"{chosen} (chosen BTYD)"][3].startswith("spend 0.")  # the interval coverage: chosen model only
    n, as_of = _query(serving, "select count(*), any_value(as_of_date) from customer_scores")[0]
    caption = " ".join(blocks["value-models"].split("\n\n")[0].split())
    assert caption.startswith(f"On the bundled sample ({n:,} customers, as of {as_of}, test window ")
    assert f"; {readme_blocks.BTYD_NAMES[chosen]} chosen on the selection window with deviance " in caption

    churn = _table_rows(blocks["churn-model"])
    metrics = dict(_query(serving, f"select model_name, bool_or(is_champion) {perf} and task = 'churn' group by 1"))
    assert {label.split(" (")[0] for label in churn} == set(metrics)
    published_model = next(m for m, is_champion in metrics.items() if is_champion)
    assert sum("published: back-test winner" in label for label in churn) == 1
    assert next(label for label in churn if "published" in label).startswith(published_model)
    assert next(label for label in churn if "reasons" in label).startswith("churn_hgb")
    assert churn["churn_recency"][2:4] == ["", ""]  # a ranking: no Brier, no log loss
    start, customers, base = _query(serving, f"select min(test_window_start), max(value) filter (where metric = "
                                             f"'n_customers'), max(value) filter (where metric = 'base_rate') {perf} "
                                             "and task = 'churn'")[0]
    assert blocks["churn-model"].startswith(
        f"On the bundled sample (test cutoff {start}, {int(customers):,} customers, {round(base * 100)} % churned):")


@pytest.mark.slow
def test_readme_blocks_have_the_markers_and_the_form_a_run_gives(published):
    """README's blocks are of the bundled sample (5,000 customers), these of the test's smaller one: the form
    without the model names and roles must match, and the same models must be there."""
    _, _, _, blocks = published
    current = readme_blocks.read_blocks((ROOT / "README.md").read_text())
    for name in readme_blocks.BLOCKS:
        assert readme_blocks.differences(current[name], blocks[name], labels=False) == [], name
    for name in ("value-models", "churn-model"):
        assert {label.split(" (")[0] for label in _table_rows(current[name])} == \
            {label.split(" (")[0] for label in _table_rows(blocks[name])}

    # new numbers are not a new form; a lost line, column or row is
    value = current["value-models"]
    assert readme_blocks.differences(value, value.replace("| 0.", "| 1.")) == []
    broken = {
        "run-summary": "\n".join(line for line in current["run-summary"].splitlines() if "run log" not in line),
        "value-models": "\n".join(line.rsplit("|", 2)[0] + "|" if line.startswith("| naive") else line
                                  for line in value.splitlines()),
        "churn-model": "\n".join(line for line in current["churn-model"].splitlines()
                                 if not line.startswith("| churn_recency")),
    }
    for name, text in broken.items():
        assert readme_blocks.differences(text, current[name], labels=False), name


@pytest.mark.slow
def test_the_script_writes_only_the_blocks_and_check_fails_on_a_broken_one(published, tmp_path, capsys):
    work, run_id, stdout, _ = published
    readme, run_output = tmp_path / "README.md", tmp_path / "run.txt"
    original = (ROOT / "README.md").read_text()
    readme.write_text(original)
    run_output.write_text(stdout)
    args = ["--readme", str(readme), "--serving", str(work / "serving.duckdb"), "--run-output", str(run_output)]

    assert readme_blocks.main(args) == 0
    written = readme.read_text()
    assert written != original and f"(run {run_id[:8]}-..., 12.3s)" in written
    empty = dict.fromkeys(readme_blocks.BLOCKS, "")
    assert readme_blocks.write_blocks(written, empty) == readme_blocks.write_blocks(original, empty)  # the rest as it was
    assert readme_blocks.main(["--check", *args]) == 0

    readme.write_text(written.replace("| churn_recency |", "| churn_recency | 0.5 |"))
    capsys.readouterr()
    assert readme_blocks.main(["--check", *args]) == 1
    assert "churn-model: structure differs" in capsys.readouterr().out

    readme.write_text(written.replace(readme_blocks.end_marker("churn-model") + "\n", ""))
    assert readme_blocks.main(["--check", *args]) == 1
    assert "README.md must hold the block churn-model exactly once" in capsys.readouterr().err
