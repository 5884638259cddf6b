"""A real Prometheus server scrapes a running worker; the series SREs alert on are there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from streams.broker.ports import free_ports
from tests.integration.events import call_recorded
from tests.integration.pipeline import Pipeline, pipelines, wait_for


def _prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus not installed; .ci/run installs Debian's prometheus package")
        pytest.skip("prometheus not installed (apt-get install prometheus)")
    return found


@pytest.fixture
def pipeline(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Pipeline]:
    yield from pipelines(kafka_bootstrap, tmp_path)


@pytest.fixture
def prometheus(pipeline: Pipeline, tmp_path: Path) -> Iterator[str]:
    binary = _prometheus_binary()
    port = free_ports(1)[0]
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: lifecycle-worker\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{pipeline.metrics_port}']\n"
    )
    with (tmp_path / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(20)


def query(base: str, promql: str) -> list[dict[str, object]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
    except OSError:
        return []
    assert body["status"] == "success"
    result: list[dict[str, object]] = body["data"]["result"]
    return result


def value(base: str, promql: str) -> float | None:
    result = query(base, promql)
    if not result:
        return None
    sample = result[0]["value"]
    assert isinstance(sample, list)
    return float(sample[1])


def test_prometheus_scrapes_pipeline_metrics(pipeline: Pipeline, prometheus: str) -> None:
    pipeline.start()
    pipeline.run_downstream("call-recorder")
    recorded = datetime.now(UTC) - timedelta(days=31)
    pipeline.publish(
        call_recorded("cust-scrape", "rec-scrape-1", event_id="ev-scrape-1", when=recorded)
    )
    pipeline.publish_raw(pipeline.names.input("crm"), b"cust-x", b"not a framed message")

    def seen(promql: str, expected: float) -> bool:
        return value(prometheus, promql) == expected

    wait_for(lambda: seen('up{job="lifecycle-worker"}', 1.0), 60, "worker scraped")
    wait_for(
        lambda: seen(
            'sum(lifecycle_commands_emitted_total{system="call-recorder",action="delete"})', 1.0
        ),
        60,
        "delete command counted",
    )
    wait_for(
        lambda: seen(
            'sum(lifecycle_commands_acknowledged_total{system="call-recorder",outcome="done"})',
            1.0,
        ),
        60,
        "acknowledgement counted",
    )
    wait_for(
        lambda: seen(
            f'sum(lifecycle_dead_letters_total{{topic="{pipeline.names.input("crm")}",'
            'reason_class="bad_framing"})',
            1.0,
        ),
        60,
        "dead letter counted by reason class",
    )
    assert value(prometheus, 'sum(lifecycle_events_consumed_total{event_type="CallRecorded"})') == 1
    assert value(prometheus, "count(lifecycle_command_ack_latency_seconds_bucket)") is not None
    # The per-system bound the outstanding-commands alert compares against.
    bound = value(prometheus, 'lifecycle_command_ack_bound_seconds{system="call-recorder"}')
    assert bound is not None
    assert bound > 0
    info = query(prometheus, "lifecycle_worker_info")
    assert info
    labels = info[0]["metric"]
    assert isinstance(labels, dict)
    assert labels["policy_version"] == pipeline.policy.version
    wait_for(lambda: bool(query(prometheus, "lifecycle_consumer_lag")), 30, "consumer lag exported")
    # Faust's own sensor metrics share the registry.
    assert query(prometheus, '{__name__=~"faust_.+"}')
    # No label anywhere carries the subject id.
    every = query(prometheus, '{__name__=~"lifecycle_.+"}')
    assert every
    assert all("cust-scrape" not in json.dumps(series["metric"]) for series in every)
