"""Prometheus metrics for the worker process (``CASES_METRICS_PORT``).

One endpoint serves both the SDK's runtime metrics (``temporal_*``: task slots, poll latencies,
activity and workflow outcomes) and the product's own, recorded through the workflow's and the
activity's metric meters:

- ``case_status_transitions_total{from,to}``: status changes (workflows/metrics.py);
- ``case_rejected_events_total{reason,event}``: events a case refused (workflows/metrics.py);
- ``case_deadline_lateness_seconds{action}``: histogram of actual - due for every deadline
  that acted (workflows/metrics.py);
- ``case_notifications_total{result,template}``: ``sent``, ``kept`` (no SMTP configured),
  ``failed`` (SMTP refused for now; the relay retries), ``undelivered`` (refused for good) and
  ``resent_in_doubt`` (activities/relay.py).

The SDK serves the endpoint from its Rust runtime: every client created after
``install_metrics`` (the default runtime) reports there.
"""

from __future__ import annotations

from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

# Seconds: a deadline normally acts within a second of its instant; minutes or hours late means
# the workers were down or starved.
LATENESS_BUCKETS = (0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 6 * 3600.0, 86400.0)


def metrics_runtime(port: int, host: str = "0.0.0.0") -> Runtime:
    """A Temporal runtime that serves Prometheus metrics on ``http://host:port/metrics``."""
    return Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=f"{host}:{port}",
                counters_total_suffix=True,  # the Prometheus convention: *_total
                durations_as_seconds=True,
                histogram_bucket_overrides={"case_deadline_lateness_seconds": LATENESS_BUCKETS},
            )
        )
    )


def install_metrics(port: int | None, host: str = "0.0.0.0") -> Runtime | None:
    """With a port, make a Prometheus-serving runtime the process default (before any client
    connects) and return it; without one, change nothing."""
    if port is None:
        return None
    runtime = metrics_runtime(port, host)
    Runtime.set_default(runtime, error_if_already_set=False)
    return runtime
