"""Write, audit, publish: failed or killed runs leave the serving database as it was, readers keep
reading whole publications during a run, and earlier publications can be rolled back to."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from orchestration.cli import main
from orchestration.publication import list_versions
from tests.conftest import published_run_id as _run_id
from tests.conftest import run_args

pytestmark = pytest.mark.slow
CLI = str(Path(sys.executable).with_name("crm-potential"))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()




def test_rollback_restores_the_previous_publication_and_can_be_undone(two_publications, tmp_path):
    work, first, second = two_publications
    copy = tmp_path / "copy"
    shutil.copytree(work, copy)
    serving = copy / "serving.duckdb"
    versions = list_versions(serving)
    assert versions and versions[0].name.endswith(f".{first}.duckdb")
    assert oct(serving.stat().st_mode & 0o777) == "0o644"
    assert main(["rollback", "--serving", str(serving)]) == 0
    assert _run_id(serving) == first
    assert main(["rollback", "--serving", str(serving), "--to", second]) == 0
    assert _run_id(serving) == second
    assert main(["rollback", "--serving", str(serving), "--to", "no-such-run"]) == 2


# layer -> (environment that makes its gate fail, phrases the error must show). The raw and staging
# layers are broken through their input in test_bad_input.py, the scores layer in the drift test below.
LAYER_FAILURES = {
    "marts": ({"CRM_MIN_BUYER_SHARE": "0.99"}, ["assert_buyer_share_above_floor", "customer_features"]),
    "models": ({"CRM_MIN_CHURN_AUC": "0.999"}, ["model_metric_floors", "below the floor 0.999"]),
}


@pytest.mark.parametrize("layer", list(LAYER_FAILURES))
def test_a_gate_failure_publishes_nothing(layer, two_publications, small_sample, tmp_path, monkeypatch, capsys):
    work, _, _ = two_publications
    copy = tmp_path / "copy"
    shutil.copytree(work, copy)
    before = _digest(copy / "serving.duckdb")
    environment, phrases = LAYER_FAILURES[layer]
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert main(run_args(small_sample, copy, "--as-of", "2026-09-29")) == 1
    err = capsys.readouterr().err
    for phrase in phrases:
        assert phrase in err, (layer, phrase, err[-3000:])
    assert "nothing was published" in err
    with duckdb.connect(str(copy / "warehouse.duckdb"), read_only=True) as con:
        published = con.execute("select count(*) from ops.pipeline_runs where published and as_of_date = '2026-09-29'")
        assert published.fetchall()[0][0] == 0
    assert _digest(copy / "serving.duckdb") == before


def test_a_killed_run_leaves_the_serving_database_untouched(two_publications, small_sample, tmp_path):
    work, _, _ = two_publications
    copy = tmp_path / "copy"
    shutil.copytree(work, copy)
    serving = copy / "serving.duckdb"
    before = _digest(serving)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([CLI, *run_args(small_sample, copy, "--as-of", "2026-09-28")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    deadline = time.time() + 120
    for line in proc.stdout:  # wait until dbt is building models, then kill everything
        if "OK created sql table model" in line or time.time() > deadline:
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert _digest(serving) == before
    # the next run recovers and publishes
    assert main(run_args(small_sample, copy)) == 0
    assert not list(copy.glob(".serving.duckdb.*.tmp*"))


READER = r"""
import sys, time, duckdb
path, stop, log = sys.argv[1], sys.argv[2], open(sys.argv[3], "w")
import os
while not os.path.exists(stop):
    try:
        with duckdb.connect(path, read_only=True) as con:
            runs = con.execute("select distinct run_id from customer_scores").fetchall()
            latest = con.execute("select run_id from pipeline_runs where published order by finished_at desc limit 1").fetchall()
            n = con.execute("select count(*), max(potential_rank) from customer_scores").fetchall()[0]
        whole = len(runs) == 1 and runs[0][0] == latest[0][0] and n[0] == n[1]
        log.write(f"ok {runs[0][0]} {whole}\n")
    except Exception as exc:
        log.write(f"error {type(exc).__name__}: {exc}\n")
    log.flush()
    time.sleep(0.02)
"""


def test_readers_are_never_locked_out_and_see_whole_publications(two_publications, small_sample, tmp_path):
    work, _, _ = two_publications
    copy = tmp_path / "copy"
    shutil.copytree(work, copy)
    serving = copy / "serving.duckdb"
    old = _run_id(serving)
    stop, log = tmp_path / "stop", tmp_path / "reader.log"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(serving), str(stop), str(log)])
    try:
        assert main(run_args(small_sample, copy, "--as-of", "2026-09-27")) == 0
        time.sleep(0.5)
    finally:
        stop.touch()
        reader.wait(timeout=30)
    new = _run_id(serving)
    lines = log.read_text().splitlines()
    assert len(lines) > 20
    assert not [line for line in lines if line.startswith("error")]
    assert all(line.endswith(" True") for line in lines)  # never a mixed publication
    seen = {line.split()[1] for line in lines}
    assert seen == {old, new}  # read the old one during the run and the new one after the swap


def test_scores_that_drift_from_the_last_publication_are_not_published(two_publications, small_sample, tmp_path, capsys):
    work, _, _ = two_publications
    copy = tmp_path / "copy"
    shutil.copytree(work, copy)
    before = _digest(copy / "serving.duckdb")
    source = tmp_path / "tenfold"
    shutil.copytree(small_sample, source)
    duckdb.execute(  # the same customers suddenly spend ten times as much: a unit or currency mistake
        f"copy (select * replace (cast(cast(amount as double) * 10 as varchar) as amount) "
        f"from read_csv('{small_sample}/orders.csv', all_varchar=true)) to '{source}/orders.csv' (header)"
    )
    assert main(run_args(source, copy)) == 1
    err = capsys.readouterr().err
    assert "scores_drift" in err and "clv mean moved" in err
    assert _digest(copy / "serving.duckdb") == before
