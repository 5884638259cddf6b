"""The privacy desk in a real browser against the real worker and broker (N7, N9-N13).

Debian's Chromium (never a downloaded browser build) driven by Playwright
pointed at it; the desk runs as ``lifecycle desk serve --project`` with the
pipeline's environment. A desk officer signs in, finds the overdue complaint,
opens its subject, places a legal hold and sees the worker decide it and the
hold in the subject's state, then downloads a portability export.

With ``LIFECYCLE_DESK_SCREENSHOTS=<dir>`` the pages visited are saved there
(that is how ``docs/screenshots`` is made).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from desk.web.auth import hash_password
from schemas.base import DataCategory, DocumentType, LegalBasis
from schemas.events import (
    ComplaintReceived,
    IdentityEvidenceReceived,
    PortabilityRequested,
)
from streams.broker.ports import free_ports
from tests.integration.events import call_recorded, desk_request, registered
from tests.integration.pipeline import (
    DEMO_POLICY,
    LIFECYCLE,
    Pipeline,
    answering_pipelines,
    wait_decided,
    wait_for,
)

playwright = pytest.importorskip("playwright.sync_api")

PASSWORD = "desk-officer-test-password"
LATE, COMPLAINT = "cust-web-late", "complaint-web-1"
EXPORTER, PORTABILITY = "cust-web-export", "port-web-1"
SHOTS = os.environ.get("LIFECYCLE_DESK_SCREENSHOTS")


def chromium() -> str:
    found = os.environ.get("LIFECYCLE_CHROMIUM") or shutil.which("chromium")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs Debian's chromium package")
        pytest.skip("no chromium (apt-get install chromium)")
    return found


@pytest.fixture
def pipeline(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Pipeline]:
    yield from answering_pipelines(kafka_bootstrap, tmp_path, policy_path=DEMO_POLICY)


@pytest.fixture
def desk_url(pipeline: Pipeline, tmp_path: Path) -> Iterator[str]:
    users = tmp_path / "desk-users.yaml"
    users.write_text(
        f"users:\n  - name: officer\n    role: officer\n"
        f"    password_hash: '{hash_password(PASSWORD)}'\n"
    )
    port = free_ports(1)[0]
    env = {
        **pipeline.env,
        "LIFECYCLE_DESK_USERS_FILE": str(users),
        "LIFECYCLE_DESK_SECRET_KEY": "browser-test-secret",
    }
    log_path = tmp_path / "desk.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(LIFECYCLE), "desk", "serve", "--project", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    try:
        wait_for(up, 60, f"the desk did not start; see {log_path}", alive=process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    logged = log_path.read_text(errors="replace")
    # No personal data in the desk's log: the subjects' ids never appear.
    assert LATE not in logged
    assert EXPORTER not in logged


def publish_story(pipeline: Pipeline) -> None:
    now = datetime.now(UTC)
    held = [
        registered(LATE, "letter-1", "crm", DataCategory.CORRESPONDENCE),
        registered(
            EXPORTER, "form-1", "crm", DataCategory.FORMS_SURVEYS, basis=LegalBasis.CONTRACT
        ),
        call_recorded(LATE, "rec-1", event_id="ev-web-rec-1", when=now),
    ]
    for event in held:
        pipeline.publish(event)
    wait_decided(pipeline, held, "records registered")
    # Overdue at once: the demo policy answers complaints within 5 minutes.
    pipeline.publish(
        ComplaintReceived(
            event_id="ev-web-complaint",
            subject_id=LATE,
            source_system="crm",
            event_time=now - timedelta(minutes=5, seconds=2),
            complaint_id=COMPLAINT,
            summary="My recording was not deleted",
        )
    )
    pipeline.publish(
        desk_request(PortabilityRequested, EXPORTER, PORTABILITY, event_id="ev-web-port")
    )
    for n, kind in enumerate((DocumentType.PASSPORT, DocumentType.BIRTH_CERTIFICATE)):
        pipeline.publish(
            desk_request(
                IdentityEvidenceReceived,
                EXPORTER,
                PORTABILITY,
                event_id=f"ev-web-id-{n}",
                evidence_id=f"id-{n}",
                document_type=kind,
            )
        )


def shot(page: object, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def reload_until(page: object, selector: str, timeout_s: float = 60.0) -> None:
    """The read model follows the topics within seconds: reload until ``selector`` shows."""
    p: playwright.Page = page  # type: ignore[name-defined]

    def shown() -> bool:
        if p.locator(selector).count() > 0:
            return True
        p.reload()
        return p.locator(selector).count() > 0

    wait_for(shown, timeout_s, f"{selector} never showed on {p.url}", interval=1.0)


def test_an_officer_finds_an_overdue_request_places_a_hold_and_downloads_an_export(
    pipeline: Pipeline, desk_url: str, tmp_path: Path
) -> None:
    publish_story(pipeline)
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), headless=True)
        try:
            context = browser.new_context(
                accept_downloads=True, viewport={"width": 1400, "height": 900}
            )
            context.set_default_timeout(30_000)
            page = context.new_page()

            # Nothing without signing in.
            page.goto(f"{desk_url}/requests")
            assert "/login" in page.url
            shot(page, "login")
            page.fill("input[name=username]", "officer")
            page.fill("input[name=password]", PASSWORD)
            page.click("form button:has-text('Sign in')")
            page.wait_for_url("**/requests")

            # The overdue complaint, first in the list.
            row = f"#requests tr:has-text('{COMPLAINT}')"
            reload_until(page, row)
            assert page.locator(row).locator(".badge.overdue").count() == 1
            assert page.locator("#requests tbody tr").first.inner_text().find(COMPLAINT) >= 0
            shot(page, "requests")

            # Its subject: what is held.
            page.locator(row).get_by_role("link", name=LATE).click()
            page.wait_for_url("**/subject?id=*")
            assert page.locator("#records").get_by_text("letter-1").count() == 1
            assert page.locator("#records").get_by_text("rec-1").count() == 1

            # A legal hold on the call recordings: sent as an event, decided by the worker.
            page.fill("#place-hold input[name=reason]", "complaint under investigation")
            page.fill("#place-hold input[name=case_reference]", "CASE-WEB-1")
            page.check("#place-hold input[value=call_recording]")
            page.click("#place-hold button")
            page.wait_for_url("**/subject?id=*")
            assert "Sent: legal hold" in page.locator(".flash").inner_text()
            # The page refreshes itself until the worker has decided it.
            page.locator("#desk-actions").get_by_text("decided: hold-placed").wait_for(
                timeout=60_000
            )
            holds = page.locator("#holds table")
            assert holds.get_by_text("CASE-WEB-1").count() == 1
            assert holds.get_by_text("call recording").count() == 1
            assert page.locator("#timeline").get_by_text("hold-placed").count() >= 1
            # And it takes effect: the recording (kept 20 s under the demo policy) is due,
            # and the worker keeps it for the hold instead of deleting it.
            hold_id = holds.locator("tbody tr td").first.inner_text()
            reload_until(page, f"#records tr:has-text('rec-1') td:has-text('{hold_id}')")
            assert page.locator("#timeline").get_by_text("deletion-held").count() >= 1
            shot(page, "subject")

            # The portability export, as sent to the subject.
            page.goto(f"{desk_url}/request?subject={EXPORTER}&id={PORTABILITY}")
            reload_until(page, "a.download:has-text('JSON')")
            shot(page, "request")
            with page.expect_download() as download_info:
                page.click("a.download:has-text('JSON')")
            saved = tmp_path / "export.json"
            download_info.value.save_as(saved)
            export = json.loads(saved.read_text())
            assert [(r["system"], r["record_id"]) for r in export["records"]] == [("crm", "form-1")]

            # The audit chain, verified again from the topic.
            page.goto(f"{desk_url}/audit")
            page.click("button:has-text('Verify from the topic')")
            assert page.locator("#verified").get_by_text("chain intact").count() >= 1
            assert page.locator("#verified").get_by_text("BROKEN").count() == 0
            shot(page, "audit")
            page.goto(f"{desk_url}/escalations")
            shot(page, "escalations")
        finally:
            browser.close()
