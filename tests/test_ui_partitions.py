"""The Dagster UI's partition view, as a data engineer opens it after two nights (issue 16: "the UI shows which nights
ran").

The two real runs of ``two_publications`` (nights 2026-08-31 and 2026-09-30) are shown by ``dagster-webserver`` on a
copy of their Dagster home and the repository's ``workspace.yaml``, as ``make serve`` runs it. GraphQL, what the UI
asks, says which nights of ``serving/publication`` are materialized; a headless Chromium opens the asset's Partitions
tab and the ``nightly`` job's Partitions page, checks what a user reads there and keeps screenshots under the test's
folder and ``/tmp/ui_shots/`` (described in the issue's closing note)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Iterator

import pytest

from orchestration.dbt_project import ensure_manifest
from orchestration.partitions import NIGHTLY_PARTITIONS, partition_keys
from orchestration.serve import commands
from tests.conftest import require
from tests.test_production import REPO, _alive, _descendants, _free_port, _graphql
from tests.test_report import chromium  # noqa: F401  (its fixture, launched by name in the test below)

pytestmark = pytest.mark.slow
SHOTS = Path("/tmp/ui_shots")
FIRST, LATEST = "2026-08-31", "2026-09-30"  # the nights of two_publications
LOCATION = "crm_potential"
STARTUP_SECONDS = 60


class Webserver:
    def __init__(self, port: int, shots: Path):
        self.port, self.shots = port, shots  # screenshots: the test's folder, and copied to SHOTS
        self.url = f"http://127.0.0.1:{port}"

    def graphql(self, query: str) -> dict:
        return _graphql(self.port, query)


@contextmanager
def running_webserver(work: Path, folder: Path) -> Iterator[Webserver]:
    """``dagster-webserver`` (the command ``make serve`` starts) on a copy of ``work`` in ``folder``, its home the
    copy's ``.dagster``; yielded once its code location has loaded. Stopped with SIGTERM, as systemd and ``make
    serve`` stop it; fails if a process is left (the webserver or its code server)."""
    copy = folder / "work"
    shutil.copytree(work, copy, ignore=shutil.ignore_patterns("*.lock"))
    ensure_manifest()  # the code server defines the dbt assets from it (fresh after the fixture's runs)
    port = _free_port()
    log = folder / "webserver.log"
    env = {**os.environ, "DAGSTER_HOME": str(copy / ".dagster")}
    with log.open("w") as out:
        proc = subprocess.Popen(commands("127.0.0.1", port, REPO / "workspace.yaml")["dagster-webserver"],
                                cwd=copy, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    processes = {proc.pid}
    try:
        started = time.monotonic()
        while True:
            assert proc.poll() is None, f"dagster-webserver exited:\n{log.read_text()}"
            try:
                nodes = _graphql(port, "{ repositoriesOrError { ... on RepositoryConnection { nodes { name } } } }")
                if nodes["repositoriesOrError"].get("nodes"):
                    break
            except OSError:
                pass
            assert time.monotonic() - started < STARTUP_SECONDS, f"no UI after {STARTUP_SECONDS} s:\n{log.read_text()}"
            time.sleep(0.3)
        print(f"webserver up in {time.monotonic() - started:.1f} s")
        processes |= _descendants(proc.pid)
        yield Webserver(port, folder)
    finally:
        processes |= _descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        deadline = time.monotonic() + 15
        while any(_alive(pid) for pid in processes) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [pid for pid in processes if _alive(pid)]
        for pid in left:  # this test's own processes: the webserver's code server
            os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left running after SIGTERM to dagster-webserver: {left}\n{log.read_text()}"


def test_the_ui_shows_which_nights_ran(request, tmp_path):
    """GraphQL, the asset's Partitions tab and the job's Partitions page on one webserver (started once: the
    suite's workers would each start their own for separate tests).

    Fixtures in this order: where Chromium is missing, skip at once (as test_report's ``chromium`` does) rather
    than build the two nights first; then the nights, whose Dagster runs must not run inside Playwright's event
    loop; then the browser."""
    executable = os.environ.get("CRM_CHROMIUM", "/usr/bin/chromium")  # test_report's chromium fixture launches it
    require(Path(executable).exists(), f"Chromium ({executable})",
            "install Debian's chromium (make browser) or set CRM_CHROMIUM to a Chromium or Chrome binary")
    work, first, second = request.getfixturevalue("two_publications")
    chromium = request.getfixturevalue("chromium")
    with running_webserver(work, tmp_path) as web:
        check_graphql(web, first, second)
        check_asset_partitions_tab(chromium, web, first, second)
        check_job_partitions_page(chromium, web)


def _materialized(statuses: dict) -> set[str]:
    """The nights in the MATERIALIZED ranges of a time-partitioned asset's status."""
    assert statuses["__typename"] == "TimePartitionStatuses", statuses
    return {key for r in statuses["ranges"] if r["status"] == "MATERIALIZED"
            for key in partition_keys(date.fromisoformat(r["startKey"]), date.fromisoformat(r["endKey"]))}


ASSET_STATUS = """{
  assetNodeOrError(assetKey: {path: ["serving", "publication"]}) { __typename ... on AssetNode {
    assetPartitionStatuses { __typename ... on TimePartitionStatuses { ranges { status startKey endKey } } }
    partitionStats { numMaterialized numPartitions numFailed numMaterializing } } }
  repositoriesOrError { ... on RepositoryConnection { nodes { partitionSets { name pipelineName } } } }
  runsOrError(filter: {pipelineName: "nightly"}) { ... on Runs { results { runId status tags { key value } } } }
}"""


def check_graphql(webserver: Webserver, first: str, second: str) -> None:
    """What the UI asks: the publication's materialized nights, the job's partition set, each night's run."""
    data = webserver.graphql(ASSET_STATUS)
    node = data["assetNodeOrError"]
    assert node["__typename"] == "AssetNode", node
    nights = NIGHTLY_PARTITIONS.get_partition_keys()
    assert node["partitionStats"] == {"numMaterialized": 2, "numPartitions": len(nights), "numFailed": 0,
                                      "numMaterializing": 0}
    materialized = _materialized(node["assetPartitionStatuses"])
    assert materialized == {FIRST, LATEST} and "2026-09-29" not in materialized

    (repository,) = data["repositoriesOrError"]["nodes"]
    assert {"name": "nightly_partition_set", "pipelineName": "nightly"} in repository["partitionSets"]
    # each night its own run, filed under it; the run without --as-of under the night its source runs up to
    runs = {r["runId"]: (r["status"], {t["key"]: t["value"] for t in r["tags"]})
            for r in data["runsOrError"]["results"]}
    assert {run_id: (status, tags.get("dagster/partition"), tags.get("crm/as_of_from"))
            for run_id, (status, tags) in runs.items()} == {
        first: ("SUCCESS", FIRST, None), second: ("SUCCESS", LATEST, "data")}


def _page(chromium, webserver, width: int, height: int):
    """A page on the webserver as a first-time user's browser opens it, minus Dagster's "Join the community" dialog
    (dismissed once per browser; it would cover the view). Requests leaving the machine are blocked and recorded."""
    page = chromium.new_page(viewport={"width": width, "height": height})
    page.add_init_script("localStorage.setItem('communityNux', JSON.stringify('1'))")
    page.outside = []

    def route(r):
        if r.request.url.startswith(webserver.url):
            r.continue_()
        else:
            page.outside.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    return page


def _text(page) -> str:
    """What the page shows, whitespace collapsed."""
    return " ".join(page.inner_text("body").split())


def _shows(page, expected: str, timeout: float = 20) -> str:
    """The page's text once it shows ``expected`` (a regular expression): counts and lists fill in as the
    statuses arrive. Fails with what the page shows after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not re.search(expected, text := _text(page)):
        assert time.monotonic() < deadline, f"the page does not show {expected!r} after {timeout} s:\n{text}"
        time.sleep(0.2)
    return text


def _shot(page, webserver, name: str) -> Path:
    path = webserver.shots / name
    page.screenshot(path=str(path))
    SHOTS.mkdir(exist_ok=True)
    shutil.copy(path, SHOTS / name)
    return path


def check_asset_partitions_tab(chromium, webserver: Webserver, first: str, second: str) -> None:
    """The Partitions tab of serving/publication: the counts, the nights that ran, each night's run and as-of date."""
    from playwright.sync_api import expect

    nights = len(NIGHTLY_PARTITIONS.get_partition_keys())
    page = _page(chromium, webserver, 1440, 1000)
    page.goto(f"{webserver.url}/assets/serving/publication?view=partitions")
    text = _shows(page, rf"{nights:,} Partitions Selected Failed \(0\) Materialized \(2\) Materializing \(0\) "
                        rf"Missing \({nights - 2}\)", timeout=30)
    assert "No partition selected" in text
    _shot(page, webserver, "1_publication_partitions_all_nights.png")

    # untick "Missing": the list is the nights that ran, newest first; the newest one opened
    page.get_by_text(f"Missing ({nights - 2})").click()
    expect(page.get_by_text("2 Partitions Selected")).to_be_visible()
    page.get_by_text(LATEST, exact=True).first.click()
    expect(page.get_by_text(second[:8]).first).to_be_visible()
    text = _text(page)
    # the list holds the two nights only (the UI renders each name twice: measured and shown), then the detail
    assert re.search(rf"Missing \({nights - 2}\) ({LATEST} )+({FIRST} )+({LATEST} )+Materialized Latest "
                     rf"materialization", text), text
    assert re.search(rf"Run {second[:8]} Job nightly @ \w+", text), text
    assert f"as_of_date {LATEST} latest_as_of_date {LATEST}" in text
    assert "partition=" + LATEST in page.url  # a link to this night is shareable
    _shot(page, webserver, "2_publication_night_2026-09-30.png")

    page.get_by_text(FIRST, exact=True).first.click()
    expect(page.get_by_text(first[:8]).first).to_be_visible()
    text = _text(page)
    assert re.search(rf"{FIRST} Materialized Latest materialization .* Run {first[:8]} Job nightly @", text), text
    assert f"as_of_date {FIRST}" in text
    _shot(page, webserver, "3_publication_night_2026-08-31.png")
    assert not page.errors and not page.outside, (page.errors, page.outside)
    page.close()


JOB_ASSETS = """{ assetNodes(pipeline: {repositoryLocationName: "crm_potential", repositoryName: "__repository__",
                                     pipelineName: "nightly"}) { isPartitioned } }"""


# the per-asset grid: a column per night, headed by its date, a square per asset; green ones succeeded
GREEN_SQUARES = """() => {
    const columns = {};
    document.querySelectorAll('[class*=gridColumn]').forEach(c => {
        const label = c.innerText.trim();
        if (/^\\d{4}-\\d{2}-\\d{2}$/.test(label))
            columns[label] = c.querySelectorAll('[class*=square][class*=success]').length;
    });
    return columns;
}"""


def check_job_partitions_page(chromium, webserver: Webserver) -> None:
    """The nightly job's Partitions page: the counts, then every asset green on the two nights, grey between."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout, expect

    nights = NIGHTLY_PARTITIONS.get_partition_keys()
    assets = webserver.graphql(JOB_ASSETS)["assetNodes"]
    assert assets and all(a["isPartitioned"] for a in assets)
    page = _page(chromium, webserver, 1920, 800)
    page.goto(f"{webserver.url}/locations/{LOCATION}/jobs/nightly/partitions")
    text = _shows(page, f"Status Show per-asset status Materialize… {len(nights)} Total partitions "
                        f"{len(nights) - 2} Missing partitions {nights[0]} {nights[-1]} Backfill history")
    assert "Jobs / nightly" in text and f"View {len(assets)} assets" in text
    _shot(page, webserver, "4_nightly_job_partitions.png")

    # per-asset status, the grid moved to September: a click on the status bar centres it on the night clicked
    page.set_viewport_size({"width": 1920, "height": 1700})
    page.get_by_role("button", name="Show per-asset status").click()
    bar = page.locator("[class*=partitionSpansContainer]").first  # the status bar (a CSS-module class)
    box = bar.bounding_box()
    middle = (nights.index(FIRST) + nights.index(LATEST)) // 2  # mid-September: both nights in the grid
    bar.click(position={"x": (middle + 0.5) / len(nights) * box["width"], "y": box["height"] / 2})
    expect(page.get_by_text(FIRST, exact=True).first).to_be_visible()
    expect(page.get_by_text(LATEST, exact=True).first).to_be_visible()
    try:  # the squares turn green asset by asset as their statuses arrive
        page.wait_for_function(f"""() => {{ const g = ({GREEN_SQUARES})();
            return g['{FIRST}'] === {len(assets)} && g['{LATEST}'] === {len(assets)}; }}""", timeout=20_000)
    except PlaywrightTimeout:
        pass  # the assertion below shows what the grid shows
    green = page.evaluate(GREEN_SQUARES)
    assert "2026-09-29" in green and "2026-09-01" in green  # the grid shows the days between the two nights
    assert {night: n for night, n in green.items() if n} == {FIRST: len(assets), LATEST: len(assets)}, green
    _shot(page, webserver, "5_nightly_job_per_asset_status.png")
    assert not page.errors and not page.outside, (page.errors, page.outside)  # no uncaught error, nothing fetched
    page.close()
