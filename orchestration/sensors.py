"""The run-failure sensor: the Dagster daemon alerts when a nightly run fails (``orchestration/alerts.py``).

It is on by default only when an alert target is configured when the definitions load (``CRM_ALERT_WEBHOOK``,
or ``CRM_ALERT_EMAIL_TO`` with ``CRM_SMTP_HOST``): with nothing configured it would only log "nowhere to
send", so a plain ``make ui`` stays quiet. Runs of ``crm-potential run`` execute in-process and are never seen
by the daemon's sensor; the CLI calls ``alert_failed_run`` itself.
"""

from __future__ import annotations

import dagster as dg

from orchestration.alerts import alert_failed_run, has_targets, targets_display
from orchestration.jobs import nightly_job

SENSOR_NAME = "failure_alerts"


def _settings():
    from orchestration.settings import PipelineSettings

    return PipelineSettings.from_env()


def default_sensor_status() -> dg.DefaultSensorStatus:
    """RUNNING when the environment (or config file) names an alert target now, else STOPPED."""
    try:
        configured = has_targets(_settings())
    except ValueError:  # unusable settings: the CLI and the run say which; no alerts until they are fixed
        configured = False
    return dg.DefaultSensorStatus.RUNNING if configured else dg.DefaultSensorStatus.STOPPED


def failure_sensor(default_status: dg.DefaultSensorStatus | None = None) -> dg.SensorDefinition:
    """The ``failure_alerts`` sensor (``default_status`` None: ``default_sensor_status()`` now)."""

    @dg.run_failure_sensor(
        name=SENSOR_NAME,
        monitored_jobs=[nightly_job],
        default_status=default_sensor_status() if default_status is None else default_status,
        description="Posts a failed night to CRM_ALERT_WEBHOOK (JSON) and/or e-mails CRM_ALERT_EMAIL_TO via "
        "CRM_SMTP_HOST. On by default only when one of them is set.",
    )
    def failure_alerts(context: dg.RunFailureSensorContext):
        settings = _settings()  # read at each evaluation: an edited config file applies at once
        if not has_targets(settings):
            return dg.SkipReason(f"run {context.dagster_run.run_id} failed; no alert target is configured")
        run_id = context.dagster_run.run_id
        problems = alert_failed_run(settings, context.instance, run_id)
        if problems:  # the tick shows them in the UI; the run's own failure stands either way
            for problem in problems:
                context.log.warning(problem)
            return dg.SkipReason(f"run {run_id} failed; the alert did not fully go out: " + "; ".join(problems))
        context.log.info(f"run {run_id} failed; alerted {targets_display(settings)}")
        return None

    return failure_alerts


failure_alerts = failure_sensor()
