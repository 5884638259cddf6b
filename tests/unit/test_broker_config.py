"""server.properties generation for local KRaft nodes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from streams.broker.config import (
    NodeSpec,
    bootstrap_servers,
    broker_properties,
    new_cluster_id,
    node_specs,
    quorum_voters,
    render_properties,
)

DATA = Path("/tmp/node/data")


def test_ports_pair_up_as_broker_then_controller_per_node() -> None:
    assert node_specs([9000, 9001, 9002, 9003]) == [
        NodeSpec(node_id=1, broker_port=9000, controller_port=9001),
        NodeSpec(node_id=2, broker_port=9002, controller_port=9003),
    ]


def test_odd_port_count_is_refused() -> None:
    with pytest.raises(ValueError, match="even number"):
        node_specs([9000, 9001, 9002])


def test_single_node_is_broker_and_controller_with_replication_one() -> None:
    [node] = node_specs([9092, 9093])
    props = broker_properties(node, [node], DATA)
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092"
    assert props["log.dirs"] == str(DATA)
    for key in (
        "default.replication.factor",
        "min.insync.replicas",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
    ):
        assert props[key] == "1", key


def test_settings_tuned_for_tests_on_every_cluster_size() -> None:
    for ports in ([1, 2], [1, 2, 3, 4, 5, 6]):
        nodes = node_specs(ports)
        props = broker_properties(nodes[0], nodes, DATA)
        assert props["group.initial.rebalance.delay.ms"] == "0"
        assert props["auto.create.topics.enable"] == "false"
        assert props["num.partitions"] == "1"


def test_three_nodes_form_one_quorum_with_rf3_and_min_isr_two() -> None:
    nodes = node_specs([10, 11, 20, 21, 30, 31])
    assert quorum_voters(nodes) == "1@127.0.0.1:11,2@127.0.0.1:21,3@127.0.0.1:31"
    assert bootstrap_servers(nodes) == "127.0.0.1:10,127.0.0.1:20,127.0.0.1:30"
    for node in nodes:
        props = broker_properties(node, nodes, DATA)
        assert props["node.id"] == str(node.node_id)
        assert props["controller.quorum.voters"] == quorum_voters(nodes)
        assert props["default.replication.factor"] == "3"
        assert props["min.insync.replicas"] == "2"
        assert props["offsets.topic.replication.factor"] == "3"
        assert props["transaction.state.log.replication.factor"] == "3"
        assert props["transaction.state.log.min.isr"] == "2"


def test_extra_config_overrides_generated_values() -> None:
    [node] = node_specs([1, 2])
    props = broker_properties(node, [node], DATA, {"num.partitions": "6", "x.y": "z"})
    assert props["num.partitions"] == "6"
    assert props["x.y"] == "z"


def test_rendered_properties_are_sorted_and_escaped() -> None:
    text = render_properties({"b": "2", "a": "C:\\dir", "c": "line1\nline2"})
    assert text == "a=C:\\\\dir\nb=2\nc=line1\\nline2\n"


def test_cluster_ids_look_like_kafka_uuids() -> None:
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cluster_id in ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", cluster_id)
        assert not cluster_id.startswith("-")
