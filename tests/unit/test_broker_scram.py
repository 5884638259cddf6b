"""SASL/SCRAM for local clusters: generated properties, format arguments, client settings."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from streams.broker.config import ScramSpec, broker_properties, node_specs
from streams.broker.launcher import LocalKafka, format_arg_file
from streams.broker.probe import admin_config

DATA = Path("/tmp/node/data")
USERS = {"admin": "admin-secret", "worker": "w-secret"}
JAAS_KEY = "listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config"


def test_scram_makes_the_client_listener_sasl_and_keeps_the_controller_plaintext() -> None:
    [node] = node_specs([9092, 9093])
    props = broker_properties(node, [node], DATA, scram=ScramSpec(USERS))
    assert props["listeners"] == "SASL_PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["advertised.listeners"] == "SASL_PLAINTEXT://127.0.0.1:9092"
    assert props["listener.security.protocol.map"] == (
        "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT"
    )
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["inter.broker.listener.name"] == "SASL_PLAINTEXT"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-256"
    assert props["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-256"
    assert props[JAAS_KEY] == (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="admin" password="admin-secret";'
    )


def test_scram_sha_512_and_another_inter_broker_user() -> None:
    [node] = node_specs([9092, 9093])
    spec = ScramSpec(USERS, mechanism="SCRAM-SHA-512", inter_broker_user="worker")
    props = broker_properties(node, [node], DATA, scram=spec)
    jaas = props["listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config"]
    assert 'username="worker" password="w-secret";' in jaas
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert JAAS_KEY not in props


def test_plaintext_default_has_no_sasl_settings() -> None:
    [node] = node_specs([9092, 9093])
    props = broker_properties(node, [node], DATA)
    assert props["listener.security.protocol.map"] == "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert not [key for key in props if "sasl" in key]


def test_extra_config_still_overrides_the_scram_settings() -> None:
    [node] = node_specs([9092, 9093])
    props = broker_properties(
        node,
        [node],
        DATA,
        {"sasl.enabled.mechanisms": "SCRAM-SHA-256,PLAIN"},
        scram=ScramSpec(USERS),
    )
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-256,PLAIN"


def test_storage_args_add_every_user() -> None:
    assert ScramSpec(USERS).storage_args() == [
        "--add-scram",
        "SCRAM-SHA-256=[name=admin,password=admin-secret]",
        "--add-scram",
        "SCRAM-SHA-256=[name=worker,password=w-secret]",
    ]


def test_format_arg_file_quotes_the_tool_and_its_arguments_one_a_line() -> None:
    text = format_arg_file(
        ["kafka.tools.StorageTool", "format", "-c", "/x/server.properties"],
        ScramSpec({"admin": "p"}),
    )
    assert text.splitlines() == [
        '"kafka.tools.StorageTool"',
        '"format"',
        '"-c"',
        '"/x/server.properties"',
        '"--add-scram"',
        '"SCRAM-SHA-256=[name=admin,password=p]"',
    ]


def test_client_config_logs_in_as_a_user() -> None:
    spec = ScramSpec(USERS)
    assert spec.client_config() == {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "admin",
        "sasl.password": "admin-secret",
    }
    assert spec.client_config("worker")["sasl.password"] == "w-secret"
    with pytest.raises(ValueError, match="no SCRAM user 'nobody'"):
        spec.client_config("nobody")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"users": USERS, "mechanism": "PLAIN"}, "must be one of"),
        ({"users": {}}, "at least one user"),
        ({"users": {"worker": "w-secret"}}, "inter-broker user 'admin'"),
        ({"users": {"ad,min": "x"}}, "user name"),
        ({"users": {"admin": 'pa"ss'}}, "password of SCRAM user 'admin'"),
        ({"users": {"admin": "pa ss"}}, "password of SCRAM user 'admin'"),
        ({"users": {"admin": "p]ss"}}, "password of SCRAM user 'admin'"),
    ],
)
def test_unusable_specs_are_refused_without_echoing_passwords(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message) as info:
        ScramSpec(**kwargs)  # type: ignore[arg-type]
    for password in ("pa ss", 'pa"ss', "p]ss", "w-secret"):
        assert password not in str(info.value)


def test_repr_hides_passwords() -> None:
    spec = ScramSpec(USERS)
    assert "secret" not in repr(spec)
    assert "SCRAM-SHA-256" in repr(spec)


def test_users_cannot_be_changed_through_the_callers_dict() -> None:
    users = dict(USERS)
    spec = ScramSpec(users)
    users["admin"] = "changed"
    assert spec.client_config()["sasl.password"] == "admin-secret"


def test_admin_config_adds_client_security_and_is_unchanged_without_it() -> None:
    plain = admin_config("127.0.0.1:1")
    assert not [key for key in plain if key.startswith(("sasl", "security"))]
    secured = admin_config("127.0.0.1:1", ScramSpec(USERS).client_config())
    assert secured == {**plain, **ScramSpec(USERS).client_config()}


def test_local_kafka_client_config(tmp_path: Path) -> None:
    plain = LocalKafka(base_dir=tmp_path)
    assert plain.security_protocol == "PLAINTEXT"
    assert plain.client_config() == {}
    with pytest.raises(ValueError, match="no SCRAM users"):
        plain.client_config("worker")
    scram = LocalKafka(base_dir=tmp_path, scram_users=USERS)
    assert scram.security_protocol == "SASL_PLAINTEXT"
    assert scram.client_config("worker")["sasl.username"] == "worker"
    assert scram.client_config()["sasl.username"] == "admin"
    with pytest.raises(ValueError, match="inter-broker user"):
        LocalKafka(base_dir=tmp_path, scram_users={"worker": "w-secret"})


def test_scram_server_properties_are_readable_by_the_owner_only(tmp_path: Path) -> None:
    kafka = LocalKafka(base_dir=tmp_path, name="scram", scram_users=USERS)
    [node] = node_specs([9092, 9093])
    kafka._write_node_files(node, [node])
    path = tmp_path / "scram" / "node-1" / "server.properties"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert "\nlisteners=SASL_PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093\n" in text
    assert 'password="admin-secret"' in text
    # Rewriting (a restart of the start attempt) replaces the file, still private.
    kafka._write_node_files(node, [node])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
