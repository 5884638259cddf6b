"""The desk's web application in-process (Starlette's test client, no broker):
access control, CSRF, escaping, actions as events, answers as documents."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from agents.clock import FakeClock
from agents.rules.testing import Harness
from desk.readmodel.store import Store
from desk.runtime import Desk
from desk.settings import DeskSettings
from desk.web import auth
from desk.web.app import create_app
from schemas.base import DataCategory, DocumentType
from schemas.commands import CommandAck
from schemas.events import (
    CallRecorded,
    ErasureRequested,
    Event,
    IdentityEvidenceReceived,
    LegalHoldPlaced,
    PortabilityRequested,
)
from schemas.internal import DueTick
from streams.settings import Settings
from tests.unit.builders import NOTICE, register
from tests.unit.desk_topics import AUDIT_KEY, TOPICS, Recorder

T0 = datetime(2024, 3, 4, 10, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=40)
PASSWORD = "correct horse battery staple"
# Argon2 is slow on purpose: hash once for the module.
HASH = auth.hash_password(PASSWORD)
PAGES = [
    "/requests",
    "/subject?id=cust-1",
    "/request?subject=cust-1&id=erase-1",
    "/audit",
    "/escalations",
    "/subjects?q=cust",
    "/answer?subject=cust-1&id=port-2",
]


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.clock = FakeClock(NOW)
        self.store = Store.open(
            f"sqlite:///{tmp_path / 'desk.sqlite'}",
            topics=TOPICS,
            audit_key=AUDIT_KEY,
            clock=self.clock,
        )
        self.rec = Recorder()
        self.published: list[Event] = []
        self.h = Harness(NOTICE, T0, subject_id="cust-1")
        self.rec.decision(self.h, register(self.h, "form-1", "crm", DataCategory.FORMS_SURVEYS))
        self.rec.send(self.h, self.h.event(ErasureRequested, request_id="erase-1"))
        self._portability(Harness(NOTICE, T0, subject_id="cust-2"))
        self.store.apply(self.rec.take())

    def _portability(self, h: Harness) -> None:
        self.rec.decision(h, register(h, "form-9", "crm", DataCategory.FORMS_SURVEYS))
        self.rec.send(h, h.event(PortabilityRequested, request_id="port-2"))
        d = None
        for evidence_id, kind, issued in (
            ("e1", DocumentType.PASSPORT, None),
            ("e2", DocumentType.UTILITY_BILL, date(2024, 2, 20)),
        ):
            d = self.rec.send(
                h,
                h.event(
                    IdentityEvidenceReceived,
                    request_id="port-2",
                    evidence_id=evidence_id,
                    document_type=kind,
                    issued_on=issued,
                ),
            )
        assert d is not None
        for c in d.commands:
            self.rec.send(
                h,
                CommandAck(
                    command_id=c.command_id,
                    subject_id="cust-2",
                    system=c.target_system,
                    outcome="done",
                    acked_at=T0,
                    exported=[
                        {
                            "record_id": "form-9",
                            "category": "forms_surveys",
                            "provided_by_subject": True,
                            "fields": {"name": "Jo <b>Bloggs</b>"},
                        }
                    ],
                ),
            )

    def client(self, desk_settings: DeskSettings | None = None) -> TestClient:
        desk = Desk(
            Settings(topic_prefix=TOPICS.prefix, app_id=TOPICS.app_id),
            desk_settings or DeskSettings(),
            self.store,
            self.clock,
        )
        users = auth.Users(
            [
                auth.User("alice", "officer", auth.hash_password(PASSWORD)),
                auth.User("bob", "read-only", auth.hash_password(PASSWORD)),
            ]
        )
        app = create_app(
            desk,
            users,
            publish=self.published.append,
            verify_audit=list,
            secret_key="unit-test-secret",
        )
        return TestClient(app, follow_redirects=False)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.store.close()


def csrf(client: TestClient, path: str = "/login") -> str:
    page = client.get(path)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def sign_in(client: TestClient, name: str, password: str = PASSWORD) -> int:
    response = client.post(
        "/login", data={"username": name, "password": password, "csrf_token": csrf(client)}
    )
    return response.status_code


def hold_form(token: str, reason: str = "litigation") -> dict[str, str | list[str]]:
    return {
        "csrf_token": token,
        "subject_id": "cust-1",
        "controller_id": "smartcomms",
        "reason": reason,
        "case_reference": "CASE-1",
        "categories": ["forms_surveys"],
    }


@pytest.mark.parametrize("path", PAGES)
def test_anonymous_requests_are_sent_to_sign_in(world: World, path: str) -> None:
    response = world.client().get(path)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login?next=")
    assert "cust" not in response.text


def test_an_anonymous_action_is_refused(world: World) -> None:
    client = world.client()
    response = client.post("/actions/hold", data=hold_form(csrf(client)))
    assert response.status_code == 403
    assert world.published == []


def test_wrong_password_is_refused_and_a_right_one_signs_in(world: World) -> None:
    client = world.client()
    assert sign_in(client, "alice", "wrong") == 401
    assert sign_in(client, "nobody") == 401
    assert client.get("/requests").status_code == 303
    assert sign_in(client, "alice") == 303
    page = client.get("/requests")
    assert page.status_code == 200
    rows = re.findall(r"<tr class=\"(\w+)\">", page.text)
    assert rows[0] == "overdue"
    assert page.text.index("erase-1") < page.text.index("port-2") if "port-2" in page.text else True


def test_a_read_only_user_sees_no_action_and_cannot_act(world: World) -> None:
    client = world.client()
    assert sign_in(client, "bob") == 303
    page = client.get("/subject?id=cust-1")
    assert page.status_code == 200
    assert "Place hold" not in page.text
    assert "Extend" not in page.text
    response = client.post("/actions/hold", data=hold_form(csrf(client, "/subject?id=cust-1")))
    assert response.status_code == 403
    assert "read-only" in response.text
    assert world.published == []


@pytest.mark.parametrize("token", ["", "forged-token"])
def test_a_forged_form_is_rejected(world: World, token: str) -> None:
    client = world.client()
    assert sign_in(client, "alice") == 303
    response = client.post("/actions/hold", data=hold_form(token))
    assert response.status_code == 403
    assert "forged" in response.text
    assert world.published == []


def test_an_officer_places_a_hold_and_sees_the_worker_decide_it(world: World) -> None:
    client = world.client()
    assert sign_in(client, "alice") == 303
    response = client.post(
        "/actions/hold", data=hold_form(csrf(client, "/subject?id=cust-1"), "<script>x</script>")
    )
    assert response.status_code == 303
    (event,) = world.published
    assert isinstance(event, LegalHoldPlaced)
    assert (event.subject_id, event.source_system, event.case_reference) == (
        "cust-1",
        "privacy-desk",
        "CASE-1",
    )
    assert event.categories == [DataCategory.FORMS_SURVEYS]
    page = client.get("/subject?id=cust-1")
    assert "waiting for the worker" in page.text
    assert 'http-equiv="refresh"' in page.text  # the page refreshes until decided

    world.rec.send(world.h, event)  # the worker decides it
    world.store.apply(world.rec.take())
    page = client.get("/subject?id=cust-1")
    assert "decided: hold-placed" in page.text
    assert event.hold_id in page.text
    assert "<script>x</script>" not in page.text  # escaped, not run
    assert "&lt;script&gt;x&lt;/script&gt;" in page.text
    assert 'http-equiv="refresh"' not in page.text


def test_an_invalid_action_is_not_sent(world: World) -> None:
    client = world.client()
    assert sign_in(client, "alice") == 303
    form = {**hold_form(csrf(client, "/subject?id=cust-1")), "reason": ""}
    client.post("/actions/hold", data=form)
    assert world.published == []
    page = client.get("/subject?id=cust-1")
    assert "Not sent: check these fields: reason" in page.text


def test_the_export_downloads_as_sent(world: World) -> None:
    client = world.client()
    assert sign_in(client, "bob") == 303
    page = client.get("/request?subject=cust-2&id=port-2")
    assert "Download export (JSON)" in page.text
    (href,) = re.findall(r'class="download" href="([^"]+kind=json)"', page.text)
    response = client.get(href.replace("&amp;", "&"))
    assert response.status_code == 200
    assert response.headers["content-disposition"] == 'attachment; filename="port-2.json"'
    export = json.loads(response.text)
    assert export["records"][0]["fields"] == {"name": "Jo <b>Bloggs</b>"}


def test_a_trusted_proxy_header_signs_in_only_from_a_trusted_address(world: World) -> None:
    settings = DeskSettings(trust_proxy_header="X-Forwarded-User", trusted_proxies="testclient")
    client = world.client(settings)
    assert client.get("/requests", headers={"X-Forwarded-User": "bob"}).status_code == 200
    assert client.get("/requests", headers={"X-Forwarded-User": "mallory"}).status_code == 303
    untrusted = world.client(DeskSettings(trust_proxy_header="X-Forwarded-User"))
    assert untrusted.get("/requests", headers={"X-Forwarded-User": "bob"}).status_code == 303


def test_the_access_log_names_no_subject(world: World, caplog: pytest.LogCaptureFixture) -> None:
    client = world.client()
    assert sign_in(client, "alice") == 303
    with caplog.at_level(logging.INFO):
        client.get("/subject?id=cust-1")
        client.post("/actions/hold", data=hold_form(csrf(client, "/subject?id=cust-1")))
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("desk"))
    assert "GET /subject 200" in logged
    assert "desk action published: hold-placed" in logged
    assert "cust-1" not in logged
    assert "alice" not in logged


def test_users_file_is_checked(tmp_path: Path) -> None:
    good = tmp_path / "users.yaml"
    good.write_text(f"users:\n  - name: alice\n    role: officer\n    password_hash: '{HASH}'\n")
    users = auth.Users.load(good)
    assert users.authenticate("alice", PASSWORD) is not None
    assert users.authenticate("alice", "nope") is None
    bad = tmp_path / "bad.yaml"
    bad.write_text("users:\n  - name: eve\n    role: admin\n")
    with pytest.raises(auth.UsersFileError, match="role 'admin'"):
        auth.Users.load(bad)


def test_the_escalations_page_shows_records_the_reconciliation_found_kept_too_long(
    world: World,
) -> None:
    client = world.client()
    assert sign_in(client, "bob") == 303  # read-only users see it too
    assert "Nothing found kept past its time." in client.get("/escalations").text
    h = Harness(NOTICE, T0, subject_id="cust-9")
    world.rec.send(
        h,
        h.event(
            CallRecorded,
            recording_id="rec-late",
            system="call-recorder",
            source_system="telephony",
        ),
    )
    h.clock.set(T0 + timedelta(days=31))
    now = h.clock.now()
    world.rec.send(
        h,
        DueTick(
            subject_id="cust-9",
            due_at=now,
            sent_at=now,
            records=["call-recorder/rec-late"],
            reconciliation=True,
        ),
    )
    world.store.apply(world.rec.take())
    page = client.get("/escalations").text
    section = page.split("Kept past their time", 1)[1].split("Parked items", 1)[0]
    assert "rec-late" in section
    assert "cust-9" not in section  # a pseudonym, never the subject id
