"""A failed night reaches someone: the failure sensor (and the CLI's ``alert_failed_run``) post the run's JSON to a
webhook and e-mail it, here to an HTTP server and an SMTP server on loopback; a target that is down is a line,
never an exception, and never shows the webhook's token."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import socket
import ssl
import subprocess
import threading
from email import message_from_bytes
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from orchestration.alerts import FailureAlert, alert_failed_run, send_alert, webhook_origin
from orchestration.sensors import SENSOR_NAME, failure_sensor
from orchestration.settings import PipelineSettings
from tests.conftest import build_once, require, run_args

ALERT_ENV = ("CRM_ALERT_WEBHOOK", "CRM_ALERT_EMAIL_TO", "CRM_ALERT_EMAIL_FROM", "CRM_SMTP_HOST", "CRM_SMTP_PORT",
             "CRM_SMTP_USER", "CRM_SMTP_SECURITY", "CRM_SMTP_PASSWORD", "CRM_CONFIG")
TOKEN_PATH = "/services/T000/B000/SECRETTOKEN?key=SECRETKEY"


class _Capture(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.received.append((self.path, self.headers.get("Content-Type"), body))
        status = self.server.status
        self.send_response(status)
        self.end_headers()
        self.wfile.write(b"ok" if status == 200 else b"no")

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    """An HTTP server on loopback that keeps what is posted to it: (base URL, server)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Capture)
    server.received, server.status = [], 200
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", server
    server.shutdown()
    server.server_close()


class _Inbox:
    def __init__(self):
        self.messages, self.logins = [], []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted for delivery"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        self.logins.append((auth_data.login.decode(), auth_data.password.decode()))
        ok = auth_data.password == b"s3cret"
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 235 or 535 itself


class _LoopbackSMTP(Controller):
    """aiosmtpd's controller on a free port (port 0: it checks readiness on the port it was given)."""

    def _trigger_server(self):
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


@contextlib.contextmanager
def smtp_server(**options):
    inbox = _Inbox()
    controller = _LoopbackSMTP(inbox, hostname="127.0.0.1", port=0, authenticator=inbox.authenticate, **options)
    controller.start()
    try:
        yield controller.port, inbox
    finally:
        controller.stop()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def alert_env(monkeypatch, tmp_path):
    """No alert setting from the developer's environment or a crm-potential.toml in the working directory."""
    for name in ALERT_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


@pytest.fixture(scope="session")
def failed_night(small_sample, tmp_path_factory):
    """One real failed night as of 2026-09-30: an orders file with 399 negative amounts stops at the contract
    step (about 10 s), run with ``CRM_ALERT_WEBHOOK`` naming a loopback server. Its Dagster history is in
    ``<folder>/.dagster``. Returns (folder, run id, the first failure line the CLI printed, what the CLI posted
    to the webhook, the CLI's stderr)."""
    from orchestration.cli import main

    def build(folder: Path) -> list:
        source = folder / "source"
        shutil.copytree(small_sample, source)
        orders = source / "orders.csv"
        orders.write_text(orders.read_text() + "".join(
            f"X{i},00000001,2026-01-01,-{i},completed,EUR,books,1,online\n" for i in range(1, 400)))
        err = io.StringIO()
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Capture)
        server.received, server.status = [], 200
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(err):
                for name in ALERT_ENV:
                    mp.delenv(name, raising=False)
                mp.setenv("DAGSTER_HOME", str(folder / ".dagster"))
                mp.setenv("CRM_ALERT_WEBHOOK", f"http://127.0.0.1:{server.server_address[1]}{TOKEN_PATH}")
                assert main(run_args(source, folder / "work", "--as-of", "2026-09-30")) == 1
        finally:
            server.shutdown()
            server.server_close()
        lines = [line[4:] for line in err.getvalue().splitlines() if line.startswith("  - ")]
        with dg.DagsterInstance.from_config(str(folder / ".dagster")) as instance:
            run_id = instance.get_runs(limit=1)[0].run_id
        return [run_id, lines[0], [json.loads(body) for _, _, body in server.received], err.getvalue()]

    folder, (run_id, first, posted, err) = build_once(tmp_path_factory, "alerts_failed_night", build)
    return folder, run_id, first, posted, err


def _failure_context(instance: dg.DagsterInstance, run_id: str):
    run = instance.get_run_by_id(run_id)
    event = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)[0].dagster_event
    return dg.build_run_status_sensor_context(sensor_name=SENSOR_NAME, dagster_event=event,
                                              dagster_instance=instance, dagster_run=run).for_run_failure()


@pytest.mark.slow
def test_the_failure_sensor_posts_and_mails_the_failed_night(failed_night, webhook, alert_env):
    folder, run_id, first_line, _, _ = failed_night
    url, http = webhook
    serving = folder / "work" / "serving.duckdb"
    alert_env.setenv("DAGSTER_HOME", str(folder / ".dagster"))
    with smtp_server() as (port, inbox), dg.DagsterInstance.get() as instance:
        context = _failure_context(instance, run_id)
        skipped = failure_sensor()(context)  # nothing configured: nothing sent, the tick says why
        assert isinstance(skipped, dg.SkipReason) and "no alert target" in skipped.skip_message
        assert http.received == [] and inbox.messages == []

        alert_env.setenv("CRM_ALERT_WEBHOOK", url + TOKEN_PATH)
        alert_env.setenv("CRM_ALERT_EMAIL_TO", "ops@example.com, data-team@example.com")
        alert_env.setenv("CRM_ALERT_EMAIL_FROM", "crm-nightly@example.com")
        alert_env.setenv("CRM_SMTP_HOST", "127.0.0.1")
        alert_env.setenv("CRM_SMTP_PORT", str(port))
        alert_env.setenv("CRM_SMTP_SECURITY", "none")
        sensor = failure_sensor()
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
        assert sensor(_failure_context(instance, run_id)) is None  # sent everywhere, no problem

    assert len(http.received) == 1
    path, content_type, body = http.received[0]
    assert path == TOKEN_PATH and content_type == "application/json"
    sent = json.loads(body)
    assert sent["run_id"] == run_id and sent["job"] == "nightly"
    assert sent["failed_step"] == "dbt_contract" and sent["failed_steps"] == ["dbt_contract"]
    assert sent["error"] == first_line  # the line the terminal showed first
    assert sent["error"].startswith("check reject_share_within_threshold_quarantine_orders_orders on "
                                    "quarantine/quarantine_orders failed")
    assert sent["serving_unchanged"] is True and sent["serving"] == str(serving)
    assert sent["as_of_date"] == "2026-09-30"
    assert sent["text"].startswith(f"crm-potential: the night as of 2026-09-30 FAILED (run {run_id[:8]}, job "
                                   "nightly) at dbt_contract: check reject_share_within_threshold")
    assert sent["text"].endswith(f"the serving database {serving} is unchanged.")
    assert "\n" not in sent["text"]
    # the quarantine says what broke; no value from the broken rows (their ids, amounts) is quoted
    assert any("orders: 399 of " in line and "negative amount" in line for line in sent["lines"])
    assert "X1," not in body.decode() and "-399" not in body.decode()
    assert sent["run_log"] == str(folder / "work" / "logs" / f"run_{run_id}.log")

    assert len(inbox.messages) == 1
    mail_from, rcpt_tos, content = inbox.messages[0]
    assert mail_from == "crm-nightly@example.com"
    assert rcpt_tos == ["ops@example.com", "data-team@example.com"]
    message = message_from_bytes(content, policy=email_policy)
    assert run_id in message["Subject"] and "FAILED at dbt_contract" in message["Subject"]
    text = message.get_content()
    assert text.startswith(sent["text"]) and first_line in text and "orders: 399 of " in text
    assert inbox.logins == []  # no CRM_SMTP_USER: no login


@pytest.mark.slow
def test_the_cli_alert_uses_starttls_and_the_login(failed_night, webhook, alert_env, tmp_path):
    folder, run_id, first_line, _, _ = failed_night
    url, http = webhook
    cert, key = _self_signed(tmp_path)
    alert_env.setenv("SSL_CERT_FILE", str(cert))  # the client trusts the test's certificate, and verifies it
    alert_env.setenv("DAGSTER_HOME", str(folder / ".dagster"))
    alert_env.setenv("CRM_SMTP_PASSWORD", "s3cret")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    with smtp_server(tls_context=tls, require_starttls=True) as (port, inbox):
        settings = PipelineSettings.from_env(alert_webhook=url + "/hook", alert_email_to="ops@example.com",
                                             smtp_host="127.0.0.1", smtp_port=port, smtp_user="alerts",
                                             smtp_security="starttls")
        assert alert_failed_run(settings, None, run_id) == []  # the instance of $DAGSTER_HOME, as the CLI has it
        alert_env.setenv("CRM_SMTP_PASSWORD", "wrong")
        problems = alert_failed_run(settings, None, run_id)
    assert [json.loads(body)["run_id"] for _, _, body in http.received] == [run_id, run_id]
    assert json.loads(http.received[0][2])["error"] == first_line
    assert len(inbox.messages) == 1 and run_id in message_from_bytes(inbox.messages[0][2])["Subject"]
    assert inbox.logins[0] == ("alerts", "s3cret")  # over TLS: the server requires STARTTLS before AUTH
    assert set(inbox.logins[1:]) == {("alerts", "wrong")}  # smtplib tries each mechanism the server offers
    assert problems == [f"alert e-mail via 127.0.0.1:{port} not sent: the server refused the login "
                        "(CRM_SMTP_USER, CRM_SMTP_PASSWORD); check the CRM_SMTP_* settings"]


def _self_signed(folder: Path) -> tuple[Path, Path]:
    require(shutil.which("openssl") is not None, "openssl (to make the STARTTLS test's certificate)",
            "install your OS's openssl package")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


def _alert(**changes) -> FailureAlert:
    from datetime import datetime, timezone

    values = dict(run_id="0f1e2d3c-0000-4000-8000-000000000000", job="nightly", failed_steps=["raw__orders"],
                  error="orders (orders.csv): the file is empty", as_of_date="2026-09-30",
                  when=datetime(2026, 10, 1, 2, 0, tzinfo=timezone.utc), serving_unchanged=True,
                  serving="/srv/crm/serving.duckdb")
    return FailureAlert(**{**values, **changes})


def test_a_target_that_is_down_is_a_line_without_the_token(webhook, alert_env):
    url, http = webhook
    closed = _closed_port()
    settings = PipelineSettings.from_env(alert_webhook=f"http://127.0.0.1:{closed}{TOKEN_PATH}",
                                         alert_email_to="ops@example.com", smtp_host="127.0.0.1",
                                         smtp_port=closed, smtp_security="none")
    problems = send_alert(settings, _alert())
    assert problems == [
        f"alert webhook http://127.0.0.1:{closed} not posted: cannot reach it (Connection refused); check "
        "CRM_ALERT_WEBHOOK and that the host is reachable from this machine",
        f"alert e-mail via 127.0.0.1:{closed} not sent: ConnectionRefusedError: Connection refused; check the "
        "CRM_SMTP_* settings"]
    http.status = 500
    answered = send_alert(PipelineSettings.from_env(alert_webhook=url + TOKEN_PATH), _alert())
    assert answered == [f"alert webhook {url} not posted: it answered HTTP 500 Internal Server Error; check "
                        "CRM_ALERT_WEBHOOK and that the host is reachable from this machine"]
    assert len(http.received) == 1  # it did arrive: the server said no
    for bad in ("https://user:pw@[::1:SECRETTOKEN/x", "ftp://host.example/SECRETTOKEN"):
        problems += send_alert(PipelineSettings.from_env(alert_webhook=bad), _alert())
    for line in problems + answered:
        assert "SECRETTOKEN" not in line and "SECRETKEY" not in line and "/services" not in line, line
    origin = webhook_origin("https://u:p@hooks.example.com:8443/services/T0/B0/XYZ?x=1")
    assert origin == "https://hooks.example.com:8443"


def test_the_summary_line_and_the_payload():
    line = "raw__orders: orders (orders.csv): the file is empty. Export the orders again."  # as the CLI prints it
    alert = _alert(error=line, lines=[line], partition="2026-09-30")
    assert alert.text == ("crm-potential: the night as of 2026-09-30 FAILED (run 0f1e2d3c, job nightly) at "
                          "raw__orders: orders (orders.csv): the file is empty. Export the orders again; the serving "
                          "database /srv/crm/serving.duckdb is unchanged.")
    payload = alert.payload()
    assert {k: payload[k] for k in ("run_id", "failed_step", "error", "as_of_date", "serving_unchanged", "when",
                                    "partition")} == {
        "run_id": alert.run_id, "failed_step": "raw__orders", "error": line, "as_of_date": "2026-09-30",
        "serving_unchanged": True, "when": "2026-10-01T02:00:00+00:00", "partition": "2026-09-30"}
    assert json.loads(json.dumps(payload)) == payload
    published = _alert(serving_unchanged=False, failed_steps=["serving__run_report"], as_of_date=None)
    assert "the night FAILED" in published.text
    assert published.text.endswith("the run had published to /srv/crm/serving.duckdb before it failed.")


def test_the_sensor_is_on_by_default_only_with_a_target(alert_env):
    assert failure_sensor().default_status == dg.DefaultSensorStatus.STOPPED
    alert_env.setenv("CRM_ALERT_EMAIL_TO", "ops@example.com")  # addresses but no server: still nowhere to send
    assert failure_sensor().default_status == dg.DefaultSensorStatus.STOPPED
    alert_env.setenv("CRM_SMTP_HOST", "smtp.example.com")
    assert failure_sensor().default_status == dg.DefaultSensorStatus.RUNNING
    alert_env.delenv("CRM_ALERT_EMAIL_TO")
    alert_env.delenv("CRM_SMTP_HOST")
    alert_env.setenv("CRM_ALERT_WEBHOOK", "https://hooks.example.com/x")
    sensor = failure_sensor()
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING and sensor.name == SENSOR_NAME
    assert failure_sensor(dg.DefaultSensorStatus.STOPPED).default_status == dg.DefaultSensorStatus.STOPPED


def test_a_failed_cli_run_alerts_by_itself(failed_night):
    folder, run_id, first_line, posted, err = failed_night
    assert [p["run_id"] for p in posted] == [run_id]
    assert posted[0]["error"] == first_line and posted[0]["serving_unchanged"] is True
    assert "Alert sent: webhook http://127.0.0.1:" in err and "SECRETTOKEN" not in err
