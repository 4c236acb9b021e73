"""GET /metrics in Prometheus's text format, behind the same access rules as the API.

Deliveries are counted from the database's running totals, so every process (the web workers,
sendmail from the command line, a product using the Python API) shows in them. Requests are
counted per process, in prometheus_client's own counters: with several workers, each scrape
sees the one that answered.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from .. import deliveries, outbox

bp = Blueprint("metrics", __name__)
_METHODS = frozenset({"GET", "POST", "HEAD", "OPTIONS"})


class _Deliveries(Collector):
    """Deliveries by surface, outcome and failed step, and their times, from the running totals."""

    def collect(self) -> Iterator[Metric]:
        counts = CounterMetricFamily(
            "settings_ui_deliveries",
            "Messages handed to the SMTP server, by surface (test, sendmail, python), outcome and failed step.",
            labels=["surface", "outcome", "failed_step"],
        )
        buckets: dict[tuple[str, str], dict[int, int]] = defaultdict(lambda: defaultdict(int))
        sums: dict[tuple[str, str], int] = defaultdict(int)
        for total in deliveries.totals():
            key = (total["surface"], total["outcome"])
            if total["le_ms"] == 0:
                counts.add_metric([total["surface"], total["outcome"], total["failed_step"]], total["count"])
                sums[key] += total["sum_ms"]
            else:
                buckets[key][total["le_ms"]] += total["count"]
        times = HistogramMetricFamily(
            "settings_ui_delivery_seconds",
            "How long a delivery took, from the first step to the last.",
            labels=["surface", "outcome"],
        )
        for key, counted in sorted(buckets.items()):
            bounds = [(str(bound / 1000), counted[bound]) for bound in deliveries.BUCKETS_MS]
            times.add_metric(list(key), [*bounds, ("+Inf", counted[-1])], sums[key] / 1000)
        yield counts
        yield times


class _Outbox(Collector):
    """The outbox's size and the age of its oldest message, from the database."""

    def collect(self) -> Iterator[Metric]:
        summary = outbox.summary()
        oldest = (datetime.now(UTC) - summary.oldest_queued_at).total_seconds() if summary.oldest_queued_at else 0.0
        yield GaugeMetricFamily("settings_ui_outbox_messages", "Messages waiting in the outbox.", value=summary.count)
        yield GaugeMetricFamily(
            "settings_ui_outbox_oldest_seconds",
            "How long the oldest message in the outbox has waited (0 when it is empty).",
            value=oldest,
        )


def init_app(app: Flask) -> None:
    registry = CollectorRegistry()
    registry.register(_Deliveries())
    registry.register(_Outbox())
    app.extensions["settings_ui.metrics"] = {
        "registry": registry,
        "requests": Counter(
            "settings_ui_requests",
            "HTTP requests answered by this process, by endpoint, method and status.",
            ["endpoint", "method", "status"],
            registry=registry,
        ),
        "latency": Histogram(
            "settings_ui_request_seconds",
            "Time to answer an HTTP request in this process, by endpoint.",
            ["endpoint"],
            registry=registry,
        ),
    }


def start() -> None:
    g.metrics_started = time.perf_counter()


def count(response: Response) -> Response:
    started = g.pop("metrics_started", None)
    # Every label value comes from a fixed set, so that made-up methods or paths cannot grow the
    # series without bound: the endpoint within settings-ui ("api.edit") or "other", a usual method or "other".
    endpoint = (request.endpoint or "other").removeprefix("settings_ui.")
    method = request.method if request.method in _METHODS else "other"
    metrics = current_app.extensions["settings_ui.metrics"]
    metrics["requests"].labels(endpoint, method, str(response.status_code)).inc()
    if started is not None:
        metrics["latency"].labels(endpoint).observe(time.perf_counter() - started)
    return response


@bp.get("/metrics")
def metrics() -> Response:
    registry = current_app.extensions["settings_ui.metrics"]["registry"]
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
