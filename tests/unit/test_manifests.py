"""Deployment files: Kubernetes schemas, yamllint, and coherence with settings and policy."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from streams.settings import KafkaSecurity, Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
K8S_VERSION = "1.33.0"
# Kinds with no schema in kubernetes-validate (CRDs, kustomize); checked by hand below.
NON_CORE_KINDS = {"ServiceMonitor", "PodMonitor", "Kustomization"}
PLACEHOLDER = "REPLACE-ME"

Doc = dict[str, Any]


def k8s_files() -> list[Path]:
    return sorted(K8S.glob("*.yaml"))


def docs_of(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def all_docs() -> list[Doc]:
    return [d for p in k8s_files() for d in docs_of(p)]


def one(kind: str, name: str) -> Doc:
    found = [d for d in all_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name)
    return found[0]


def pod_spec(doc: Doc) -> Doc:
    spec: Doc = doc["spec"]["template"]["spec"]
    return spec


def env_names_allowed() -> set[str]:
    """Every environment variable the settings classes read."""
    names = {"KAFKA_BOOTSTRAP_SERVERS"}
    names |= {
        f"LIFECYCLE_{f.upper()}" for f in Settings.model_fields if f != "kafka_bootstrap_servers"
    }
    names |= {f"LIFECYCLE_KAFKA_{f.upper()}" for f in KafkaSecurity.model_fields}
    return names


def policy_systems() -> set[str]:
    policy = yaml.safe_load((REPO / "agents" / "policy" / "notice.yaml").read_text("utf-8"))
    return {s["id"] for s in policy["systems"]}


# -- schemas and lint -------------------------------------------------------


@pytest.mark.parametrize("path", k8s_files(), ids=lambda p: p.name)
def test_manifest_matches_kubernetes_schema(path: Path) -> None:
    docs = docs_of(path)
    assert docs
    for doc in docs:
        if doc["kind"] in NON_CORE_KINDS:
            continue
        version = kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        assert version == "1.33"


def test_schema_validation_rejects_a_broken_manifest() -> None:
    bad = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "x"},
        "spec": {"replicas": "three", "selector": {}, "serviceName": "x", "template": {}},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_yamllint_passes_on_deploy() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "yamllint",
            "-s",
            "-c",
            ".yamllint.yaml",
            "deploy",
            ".yamllint.yaml",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_kustomization_lists_every_core_manifest() -> None:
    kustomization = docs_of(K8S / "kustomization.yaml")[0]
    listed = set(kustomization["resources"])
    core = {p.name for p in k8s_files() if not any(d["kind"] in NON_CORE_KINDS for d in docs_of(p))}
    assert listed == core


def test_every_object_is_namespaced_to_the_pipeline() -> None:
    for doc in all_docs():
        if doc["kind"] in {"Namespace", "Kustomization"}:
            continue
        assert doc["metadata"]["namespace"] == "data-lifecycle", doc["metadata"]["name"]


# -- worker -----------------------------------------------------------------


def test_worker_statefulset_persists_state_under_the_data_dir() -> None:
    sts = one("StatefulSet", "lifecycle-worker")
    config = one("ConfigMap", "lifecycle-config")["data"]
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    (container,) = pod_spec(sts)["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == config["LIFECYCLE_VAR_DIR"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert container["args"] == ["worker"]


def test_worker_replicas_do_not_exceed_partitions() -> None:
    sts = one("StatefulSet", "lifecycle-worker")
    config = one("ConfigMap", "lifecycle-config")["data"]
    assert 1 <= sts["spec"]["replicas"] <= int(config["LIFECYCLE_PARTITIONS"])


def test_worker_probes_hit_the_metrics_port() -> None:
    sts = one("StatefulSet", "lifecycle-worker")
    config = one("ConfigMap", "lifecycle-config")["data"]
    (container,) = pod_spec(sts)["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == int(config["LIFECYCLE_METRICS_PORT"])
    # Faust's web server is off (nothing uses it): no port declared for it.
    assert set(ports) == {"metrics"}
    assert config.get("LIFECYCLE_WEB_PORT", "0") == "0"
    # The probes come from outside the pod: a loopback-bound endpoint (the
    # setting's default) would fail them and restart the worker for ever.
    assert config["LIFECYCLE_METRICS_HOST"] == "0.0.0.0"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get == {"path": "/metrics", "port": "metrics"}, probe


def test_headless_service_and_pdb_select_the_worker() -> None:
    sts = one("StatefulSet", "lifecycle-worker")
    labels = sts["spec"]["template"]["metadata"]["labels"]
    svc = one("Service", sts["spec"]["serviceName"])
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"].items() <= labels.items()
    assert {p["name"] for p in svc["spec"]["ports"]} == {"metrics"}
    pdb = one("PodDisruptionBudget", "lifecycle-worker")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    monitor = one("ServiceMonitor", "lifecycle-worker")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


WORKLOADS = [
    ("StatefulSet", "lifecycle-worker"),
    ("Job", "lifecycle-topics"),
    ("Deployment", "downstream-call-recorder"),
    ("Deployment", "lifecycle-replayer"),
]


@pytest.mark.parametrize(("kind", "name"), WORKLOADS)
def test_workloads_run_non_root_with_limits(kind: str, name: str) -> None:
    spec = pod_spec(one(kind, name))
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    for container in spec["containers"]:
        res = container["resources"]
        assert {"cpu", "memory"} <= res["requests"].keys()
        assert {"cpu", "memory"} <= res["limits"].keys()
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize(("kind", "name"), WORKLOADS)
def test_workload_env_comes_from_known_settings(kind: str, name: str) -> None:
    allowed = env_names_allowed()
    spec = pod_spec(one(kind, name))
    for container in spec["containers"]:
        for source in container["envFrom"]:
            ref = source.get("configMapRef") or source["secretRef"]
            obj_kind = "ConfigMap" if "configMapRef" in source else "Secret"
            obj = one(obj_kind, ref["name"])
            keys = set((obj.get("data") or {}) | (obj.get("stringData") or {}))
            assert keys <= allowed, (ref["name"], keys - allowed)


def test_only_the_worker_holds_the_audit_hmac_key() -> None:
    holders = {
        d["metadata"]["name"]
        for d in all_docs()
        if d["kind"] in {"Secret", "ConfigMap"}
        and "LIFECYCLE_AUDIT_HMAC_KEY" in ((d.get("stringData") or {}) | (d.get("data") or {}))
    }
    assert holders == {"lifecycle-worker"}
    for kind, name in WORKLOADS:
        refs = {
            s["secretRef"]["name"]
            for c in pod_spec(one(kind, name))["containers"]
            for s in c["envFrom"]
            if "secretRef" in s
        }
        assert ("lifecycle-worker" in refs) == (kind == "StatefulSet"), name


def test_secret_values_are_marked_placeholders() -> None:
    for doc in all_docs():
        if doc["kind"] != "Secret":
            continue
        for key, value in doc["stringData"].items():
            if key.endswith("USERNAME"):
                continue
            assert PLACEHOLDER in value, (doc["metadata"]["name"], key)


def test_downstream_system_is_declared_in_the_policy() -> None:
    (container,) = pod_spec(one("Deployment", "downstream-call-recorder"))["containers"]
    args = container["args"]
    assert args[:2] == ["downstream", "--system"]
    assert args[2] in policy_systems()


def test_the_replayer_listens_for_restores() -> None:
    (container,) = pod_spec(one("Deployment", "lifecycle-replayer"))["containers"]
    assert container["args"] == ["erasures", "listen"]
    secret = one("Secret", "lifecycle-replayer")["stringData"]
    assert secret["LIFECYCLE_KAFKA_SASL_USERNAME"] == "lifecycle-replayer"  # its ACLs' principal


def test_topic_job_creates_topics() -> None:
    job = one("Job", "lifecycle-topics")
    (container,) = pod_spec(job)["containers"]
    assert container["args"] == ["topics", "create"]
    assert pod_spec(job)["restartPolicy"] in {"OnFailure", "Never"}


# -- Dockerfile -------------------------------------------------------------


def test_dockerfile() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    instructions = [
        line.split(None, 1)
        for line in re.sub(r"\\\n", " ", text).splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    by_op: dict[str, list[str]] = {}
    for op, *rest in instructions:
        by_op.setdefault(op, []).append(rest[0] if rest else "")
    assert by_op["FROM"] == ["python:3.11-slim"]
    assert any("pip install -c constraints.txt ." in r for r in by_op["RUN"])
    (user,) = by_op["USER"]
    assert user.split(":")[0] not in {"0", "root"}
    assert by_op["ENTRYPOINT"] == ['["lifecycle"]']
    for copied in ("pyproject.toml", "constraints.txt", "streams", "schemas", "agents", "desk"):
        assert any(copied in c for c in by_op["COPY"]), copied


# -- compose ----------------------------------------------------------------


def compose() -> Doc:
    data: Doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    return data


def test_compose_services_and_images() -> None:
    services = compose()["services"]
    assert set(services) == {
        "kafka",
        "topics",
        "worker",
        "downstream-call-recorder",
        "erasure-replayer",
        "prometheus",
    }
    assert re.fullmatch(r"apache/kafka:4\.1\.\d+", services["kafka"]["image"])
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    for name in ("topics", "worker", "downstream-call-recorder", "erasure-replayer"):
        build = services[name]["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    assert services["topics"]["command"] == ["topics", "create"]
    assert services["worker"]["command"] == ["worker"]
    assert services["erasure-replayer"]["command"] == ["erasures", "listen"]
    # Published and scraped from outside its container: bound on all interfaces.
    assert services["worker"]["environment"]["LIFECYCLE_METRICS_HOST"] == "0.0.0.0"
    assert "9108:9108" in services["worker"]["ports"]
    command = services["downstream-call-recorder"]["command"]
    assert command[:2] == ["downstream", "--system"]
    assert command[2] in policy_systems()


def test_compose_env_is_coherent() -> None:
    services = compose()["services"]
    kafka_env = services["kafka"]["environment"]
    advertised = dict(
        item.split("://", 1) for item in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    )
    internal = advertised[kafka_env["KAFKA_INTER_BROKER_LISTENER_NAME"]]
    allowed = env_names_allowed()
    for name in ("topics", "worker", "downstream-call-recorder"):
        env = services[name]["environment"]
        assert set(env) <= allowed, (name, set(env) - allowed)
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == internal
        assert "kafka" in services[name]["depends_on"] or "topics" in services[name]["depends_on"]
        assert ("LIFECYCLE_AUDIT_HMAC_KEY" in env) == (name == "worker"), name
    assert services["worker"]["depends_on"]["topics"]["condition"] == (
        "service_completed_successfully"
    )


def test_compose_prometheus_scrapes_the_worker_with_the_rules() -> None:
    services = compose()["services"]
    worker = services["worker"]
    port = worker["environment"]["LIFECYCLE_METRICS_PORT"]
    assert f"{port}:{port}" in worker["ports"]
    prom = services["prometheus"]
    (volume,) = prom["volumes"]
    host, container, _ = volume.split(":")
    config_arg = next(a for a in prom["command"] if a.startswith("--config.file="))
    config_path = DEPLOY / host / Path(config_arg.split("=", 1)[1]).relative_to(container)
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    assert config["rule_files"] == ["alerts.yml"]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "lifecycle-worker"
    assert job["static_configs"][0]["targets"] == [f"worker:{port}"]


def test_local_prometheus_scrapes_loopback() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text("utf-8"))
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "lifecycle-worker"
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:9108"]
    assert Settings.model_fields["metrics_port"].default == 9108


# -- Kafka ACLs ---------------------------------------------------------------


def acl_lines(**env: str) -> list[dict[str, Any]]:
    """The ACLs the script would add, parsed from its dry run."""
    result = subprocess.run(
        ["bash", str(DEPLOY / "kafka-acls.sh")],
        env={"PATH": "/usr/bin:/bin", "DRY_RUN": "1", **env},
        capture_output=True,
        text=True,
        check=True,
    )
    acls = []
    for line in result.stdout.splitlines():
        words = line.split()
        ops = {words[i + 1] for i, w in enumerate(words) if w == "--operation"}
        resource = next(
            (w.lstrip("-"), words[i + 1])
            for i, w in enumerate(words)
            if w in {"--topic", "--group", "--cluster", "--transactional-id"}
        )
        acls.append(
            {
                "principal": words[words.index("--allow-principal") + 1],
                "ops": ops,
                "resource": resource,
                "prefixed": "prefixed" in words,
            }
        )
    return acls


def test_acl_defaults_match_the_code_and_policy() -> None:
    from streams.topics import PRODUCING_SYSTEMS

    principals = {a["principal"] for a in acl_lines()}
    assert {p.removeprefix("User:producer-") for p in principals if "producer-" in p} == set(
        PRODUCING_SYSTEMS
    )
    assert {
        p.removeprefix("User:downstream-") for p in principals if "downstream-" in p
    } == policy_systems()


def test_producers_write_only_their_own_input_topic() -> None:
    for acl in acl_lines(PREFIX="lc"):
        if acl["principal"].startswith("User:producer-"):
            system = acl["principal"].removeprefix("User:producer-")
            assert acl["resource"] == ("topic", f"lc.in.{system}")
            assert acl["ops"] == {"Write", "Describe"}
            assert not acl["prefixed"]


def test_downstream_reads_own_commands_and_writes_acks_only() -> None:
    by_principal: dict[str, list[dict[str, Any]]] = {}
    for acl in acl_lines(PREFIX="lc"):
        by_principal.setdefault(acl["principal"], []).append(acl)
    downstream = {p: a for p, a in by_principal.items() if p.startswith("User:downstream-")}
    assert downstream
    for principal, acls in downstream.items():
        system = principal.removeprefix("User:downstream-")
        granted = {(a["resource"], frozenset(a["ops"]), a["prefixed"]) for a in acls}
        assert granted == {
            (("topic", f"lc.cmd.{system}"), frozenset({"Read", "Describe"}), False),
            (("group", f"lc.downstream.{system}"), frozenset({"Read"}), False),
            (("topic", "lc.acks"), frozenset({"Write", "Describe"}), False),
            (("topic", "lc.restores"), frozenset({"Write", "Describe"}), False),
        }


def test_only_the_worker_writes_internal_topics_and_reads_changelogs() -> None:
    internal = {"lc.ticks", "lc.audit", "lc.responses", "lc.dead-letter", "lc.erasure-ledger"}
    worker_writes = set()
    for acl in acl_lines(PREFIX="lc", APP_ID="app"):
        kind, name = acl["resource"]
        writes = bool(acl["ops"] & {"Write", "All"})
        if acl["principal"] == "User:lifecycle-worker":
            if writes:
                worker_writes.add(name)
            continue
        if acl["principal"] == "User:lifecycle-replayer" and name == "lc.dead-letter":
            assert acl["ops"] == {"Write", "Describe"}, acl  # parks; never reads it
            continue
        assert not (kind == "topic" and name.startswith("app-")), acl
        assert not (writes and (name in internal or name.startswith("lc.cmd."))), acl
        assert not (kind == "topic" and name in {"lc.dead-letter", "lc.responses"}), acl
        assert not (acl["prefixed"] and acl["ops"] & {"Read", "Write"} and kind == "topic"), acl
    assert internal | {"lc.cmd.", "app-"} <= worker_writes


def test_only_the_worker_may_take_over_the_audit_transactional_ids() -> None:
    from agents.audit.writer import transactional_id

    transactional = [a for a in acl_lines(APP_ID="app") if a["resource"][0] == "transactional-id"]
    assert [(a["principal"], a["ops"], a["prefixed"]) for a in transactional] == [
        ("User:lifecycle-worker", {"Write", "Describe"}, True)
    ]
    (acl,) = transactional
    assert transactional_id("app", 7).startswith(acl["resource"][1])


def test_acl_script_refuses_to_run_without_a_cluster() -> None:
    result = subprocess.run(
        ["bash", str(DEPLOY / "kafka-acls.sh")],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "BOOTSTRAP" in result.stderr


def test_orchestrators_give_the_worker_longer_than_its_own_stop_bound() -> None:
    bound = Settings().stop_timeout_s
    assert float(compose()["services"]["worker"]["stop_grace_period"].rstrip("s")) > bound
    spec = pod_spec(one("StatefulSet", "lifecycle-worker"))
    assert spec["terminationGracePeriodSeconds"] > bound
