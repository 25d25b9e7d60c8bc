"""Telling someone that a night failed: one JSON message to a webhook and/or one e-mail.

Nobody watches a 02:00 run. When it fails, the failure sensor (``orchestration/sensors.py``, in the Dagster
daemon) and ``crm-potential run`` (in-process, no daemon sees it) send the same alert: the run id, the failed
step, the first error line (the line the terminal shows, from ``orchestration/failures.py``), the as-of date and
whether the serving database was left as it was. Standard library only (urllib, smtplib): the alert path must
work when everything else is broken. Sending never raises: a webhook that is down must not hide the run's own
failure, so problems come back as lines for the caller to print or log. A webhook URL carries its token in the
path or query: messages name its scheme and host only.
"""

from __future__ import annotations

import http.client
import json
import os
import smtplib
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlsplit

from data_quality.pii import scrub_text
from orchestration.failures import first_line, run_outcome

SMTP_PASSWORD_ENV = "CRM_SMTP_PASSWORD"  # never a setting: settings are recorded and may sit in a file
TIMEOUT_SECONDS = 10
ERROR_LIMIT = 300  # characters of the first error line in the one-line summary
CONTRACT_STEP = "dbt_contract"  # the step whose quarantine gate the quarantine's counts explain
PARTITION_TAG = "dagster/partition"  # a partitioned run's night
AS_OF_FROM_TAG = "crm/as_of_from"  # as orchestration/settings.py: set when the night is not the run's as-of date


@dataclass
class FailureAlert:
    """A failed run, as the alert tells it. ``lines`` are every failure line (the e-mail's body)."""

    run_id: str
    job: str
    failed_steps: list[str]
    error: str
    as_of_date: str | None
    when: datetime
    serving_unchanged: bool
    serving: str
    lines: list[str] = field(default_factory=list)
    run_log: str | None = None
    partition: str | None = None  # the Dagster partition (night) the run is filed under, if any

    @property
    def failed_step(self) -> str:
        return ", ".join(self.failed_steps) or "run"

    @property
    def text(self) -> str:
        """The one-line summary that chat webhooks show and the e-mail's first line."""
        night = f"night as of {self.as_of_date}" if self.as_of_date else "night"
        serving = (f"the serving database {self.serving} is unchanged" if self.serving_unchanged else
                   f"the run had published to {self.serving} before it failed")
        error = self.error.removeprefix(f"{self.failed_steps[0]}: ") if self.failed_steps else self.error
        return (f"crm-potential: the {night} FAILED (run {self.run_id[:8]}, job {self.job}) at "
                f"{self.failed_step}: {error.rstrip('.')}; {serving}.")

    def payload(self) -> dict:
        """The webhook's JSON body: ``text`` for Slack/Teams, the fields for anything that parses it."""
        return {"text": self.text, "run_id": self.run_id, "job": self.job, "failed_step": self.failed_step,
                "error": self.error, "as_of_date": self.as_of_date, "serving_unchanged": self.serving_unchanged,
                "serving": self.serving, "when": self.when.isoformat(timespec="seconds"),
                "failed_steps": self.failed_steps, "lines": self.lines, "run_log": self.run_log,
                "partition": self.partition}


def has_targets(settings) -> bool:
    """Whether ``settings`` name somewhere to send an alert (a webhook, or addresses and an SMTP server)."""
    return bool(settings.alert_webhook.strip() or (_recipients(settings) and settings.smtp_host.strip()))


def targets_display(settings) -> str:
    """Where alerts go, in words without secrets (for the CLI and the sensor's log)."""
    shown = []
    if settings.alert_webhook.strip():
        shown.append(f"webhook {webhook_origin(settings.alert_webhook)}")
    if _recipients(settings) and settings.smtp_host.strip():
        shown.append(f"e-mail to {', '.join(_recipients(settings))} via {settings.smtp_host}:{settings.smtp_port}")
    return " and ".join(shown) or "nowhere (no CRM_ALERT_WEBHOOK, no CRM_ALERT_EMAIL_TO with CRM_SMTP_HOST)"


def webhook_origin(url: str) -> str:
    """``scheme://host[:port]`` of a webhook URL: its path and query (the token) and any user info left out."""
    try:
        parts = urlsplit(url.strip())
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # the exception's text would quote the URL
        return "(not a valid URL)"
    return f"{parts.scheme}://{parts.hostname}{port}" if parts.scheme and parts.hostname else "(not a valid URL)"


def _recipients(settings) -> list[str]:
    return [a.strip() for a in settings.alert_email_to.split(",") if a.strip()]


def _run_settings(run, settings):
    """The failed run's own settings: what its run config says (the CLI writes them all there) over ``settings``
    (the daemon's, for a run launched with no config)."""
    from orchestration.settings import PipelineSettings

    config = ((run.run_config or {}).get("resources", {}).get("settings", {}).get("config", {})) if run else {}
    base = settings if settings is not None else PipelineSettings.from_env()
    if not config:
        return base
    try:
        return PipelineSettings(**{**base.model_dump(), **config})
    except Exception:  # an unreadable run config: the caller's settings still say where things are
        return base


def _warehouse_facts(settings, run_id: str, contract_failed: bool) -> tuple[str | None, list[str], list[str]]:
    """From the warehouse, read-only and best effort (a new night may already hold it): the run's as-of date
    (recorded by its contract step), the erased customer ids (never named in an alert) and, when the contract
    step failed, what the quarantine holds (the usual reason its gate stopped the run; after any other failure
    the quarantine may still be an earlier night's)."""
    import duckdb

    from data_quality.pii import erased_ids
    from data_quality.quarantine import describe, quarantine_counts, raw_counts
    from orchestration.warehouse import DuckDBWarehouse

    as_of, ids, quarantine = None, [], []
    if not Path(settings.warehouse_path).exists():
        return as_of, ids, quarantine
    try:
        with duckdb.connect(settings.warehouse_path, read_only=True) as con:
            try:
                found = con.execute("select windows from ops.run_windows where run_id = ?", [run_id]).fetchall()
                as_of = json.loads(found[0][0]).get("as_of") if found else None
            except duckdb.Error:
                pass
            ids = erased_ids(con)
            if contract_failed:
                quarantine = describe(quarantine_counts(DuckDBWarehouse(con)), raw_counts(DuckDBWarehouse(con)),
                                      settings.max_bad_row_share)
    except Exception:  # locked, missing schemas, an older layout: the alert goes out without these
        pass
    return as_of, ids, quarantine


def _failed_steps(events) -> list[str]:
    """The steps that failed, in order: each failed step and each step whose blocking check failed."""
    steps: list[str] = []
    for event in events:
        kind = event.event_type_value
        data = event.event_specific_data
        failed = kind == "STEP_FAILURE" or (
            kind == "ASSET_CHECK_EVALUATION" and not data.passed
            and str(getattr(data.severity, "value", data.severity)).upper() != "WARN")
        if failed and event.step_key and event.step_key not in steps:
            steps.append(event.step_key)
    return steps


def alert_from_run(instance, run_id: str, settings=None) -> FailureAlert:
    """The alert for a failed run, from its Dagster event log (through ``failures.run_outcome``, the same lines the
    CLI prints) and, best effort, the run's warehouse. ``settings`` fill in what the run's config does not say."""
    from orchestration.published import published_run_id
    from orchestration.run_logging import run_log_path

    run = instance.get_run_by_id(run_id)
    settings = _run_settings(run, settings)
    events = [entry.dagster_event for entry in instance.all_logs(run_id) if entry.is_dagster_event]
    outcome = run_outcome(events, warehouse=settings.warehouse_path)
    failed_steps = _failed_steps(events)
    as_of, ids, quarantine = _warehouse_facts(settings, run_id, CONTRACT_STEP in failed_steps)
    tags = run.tags if run else {}
    partition = tags.get(PARTITION_TAG)
    as_of = as_of or settings.as_of_date or (partition if AS_OF_FROM_TAG not in tags else None)
    lines = [scrub_text(line, ids) for line in outcome.lines + quarantine]
    errors = [line for line in outcome.lines if not line.startswith("warning: ")]
    error = first_line(scrub_text(errors[0], ids), ERROR_LIMIT) if errors else (
        "the run failed before any step; see the run log")
    record = instance.get_run_record_by_id(run_id)
    end = record.end_time if record and record.end_time else None
    when = datetime.fromtimestamp(end, timezone.utc) if end else datetime.now(timezone.utc)
    published = outcome.published or published_run_id(settings) == run_id
    return FailureAlert(run_id=run_id, job=run.job_name if run else "?", failed_steps=failed_steps,
                        error=error, as_of_date=as_of or None, when=when, serving_unchanged=not published,
                        serving=settings.serving_display, lines=lines or [error],
                        run_log=str(run_log_path(settings.warehouse_path, run_id)), partition=partition)


def send_alert(settings, alert: FailureAlert) -> list[str]:
    """Post ``alert`` to the webhook and e-mail it, as configured. Returns one line per problem (empty: every
    configured target accepted it); never raises for a network or server error."""
    problems = []
    if settings.alert_webhook.strip():
        problems += _post(settings.alert_webhook.strip(), alert)
    if _recipients(settings) and settings.smtp_host.strip():
        problems += _mail(settings, alert)
    elif _recipients(settings):
        problems.append("alert e-mail not sent: CRM_ALERT_EMAIL_TO is set but CRM_SMTP_HOST is not")
    return problems


def _post(url: str, alert: FailureAlert) -> list[str]:
    origin = webhook_origin(url)
    if not origin.startswith(("http://", "https://")):
        return [f"alert webhook not posted: CRM_ALERT_WEBHOOK must be an http:// or https:// URL, got {origin}"]
    request = urllib.request.Request(url, data=json.dumps(alert.payload()).encode("utf-8"), method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "crm-potential"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            response.read()
        return []
    except urllib.error.HTTPError as exc:
        reason = f"it answered HTTP {exc.code} {exc.reason}"
    except urllib.error.URLError as exc:
        reason = f"cannot reach it ({_reason(exc.reason)})"
    except ValueError:  # a malformed URL (the exception's text would quote it)
        reason = "it is not a valid URL"
    except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, a garbled answer
        reason = f"cannot reach it ({_reason(exc)})"
    return [f"alert webhook {origin} not posted: {reason.replace(url, origin)}; check CRM_ALERT_WEBHOOK and that "
            "the host is reachable from this machine"]


def _reason(error) -> str:
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return first_line(str(text), 200)


def _mail(settings, alert: FailureAlert) -> list[str]:
    message = EmailMessage()
    night = f"night as of {alert.as_of_date}" if alert.as_of_date else "night"
    message["Subject"] = f"[crm-potential] {night} FAILED at {alert.failed_step}: run {alert.run_id}"
    message["From"] = settings.alert_email_from
    message["To"] = ", ".join(_recipients(settings))
    body = [alert.text, "", "What failed:", *[f"  - {line}" for line in alert.lines], "",
            f"Run: {alert.run_id} (job {alert.job}), ended {alert.when.isoformat(timespec='seconds')}",
            f"Serving database: {alert.serving} ({'unchanged' if alert.serving_unchanged else 'published'})"]
    if alert.run_log:
        body.append(f"Full error text and stack frames: {alert.run_log} (and the Dagster UI)")
    message.set_content("\n".join(body) + "\n")
    server = f"{settings.smtp_host}:{settings.smtp_port}"
    password = os.environ.get(SMTP_PASSWORD_ENV, "")
    if settings.smtp_user and not password:
        return [f"alert e-mail not sent: CRM_SMTP_USER is set but {SMTP_PASSWORD_ENV} is empty"]
    try:
        context = ssl.create_default_context()
        if settings.smtp_security == "ssl":
            client = smtplib.SMTP_SSL(settings.smtp_host, settings.smtp_port, timeout=TIMEOUT_SECONDS, context=context)
        else:
            client = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=TIMEOUT_SECONDS)
        with client:
            if settings.smtp_security == "starttls":
                client.starttls(context=context)
            if settings.smtp_user:
                client.login(settings.smtp_user, password)
            client.send_message(message)
        return []
    except smtplib.SMTPAuthenticationError:
        reason = "the server refused the login (CRM_SMTP_USER, CRM_SMTP_PASSWORD)"
    except smtplib.SMTPNotSupportedError as exc:
        reason = f"{first_line(str(exc), 200)} (CRM_SMTP_SECURITY={settings.smtp_security})"
    except smtplib.SMTPRecipientsRefused:
        reason = "the server refused the recipients (CRM_ALERT_EMAIL_TO)"
    except (smtplib.SMTPException, OSError) as exc:  # refused, timed out, TLS handshake, a reply code
        reason = f"{type(exc).__name__}: {_reason(exc)}"
    return [f"alert e-mail via {server} not sent: {reason}; check the CRM_SMTP_* settings"]


def alert_failed_run(settings, instance, run_id: str) -> list[str]:
    """Alert on the failed run ``run_id`` when ``settings`` name a target; the problems, as ``send_alert``. For
    the sensor and for ``crm-potential run`` (in-process, so no daemon sensor sees its runs). ``instance``:
    the Dagster instance holding the run, or None for ``$DAGSTER_HOME``'s (the CLI's)."""
    if not has_targets(settings):
        return []
    try:
        if instance is None:
            from dagster import DagsterInstance

            with DagsterInstance.get() as own:
                alert = alert_from_run(own, run_id, settings)
        else:
            alert = alert_from_run(instance, run_id, settings)
    except Exception as exc:  # the alert must still go out, with less in it
        from orchestration.published import published_run_id

        alert = FailureAlert(run_id=run_id, job="?", failed_steps=[], as_of_date=settings.as_of_date or None,
                             error=f"the run's events could not be read ({type(exc).__name__}); see the run log",
                             when=datetime.now(timezone.utc),
                             serving_unchanged=published_run_id(settings) != run_id,
                             serving=settings.serving_display)
    return send_alert(settings, alert)
