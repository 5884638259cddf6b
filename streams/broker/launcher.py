"""LocalKafka: a real Apache Kafka cluster (KRaft) on loopback, run from the official jars.

    with LocalKafka(nodes=1) as kafka:
        produce_to(kafka.bootstrap_servers)

One node is broker and controller at once; three nodes form a real quorum
(RF 3, min.insync.replicas 2) with ``kill_node``/``stop_node``/``start_node``
for fault tests. Each cluster has its own dir (``<var>/kafka/<name>``); broker
logs go to files there, never to the caller's stdout.

SASL/SCRAM instead of PLAINTEXT on the client listener:

    with LocalKafka(scram_users={"admin": "a-secret", "worker": "w-secret"}) as kafka:
        Producer({"bootstrap.servers": kafka.bootstrap_servers,
                  **kafka.client_config("worker")})

The launcher's own clients (readiness probe) log in as ``inter_broker_user``.
Passwords reach only server.properties (mode 0600) and a format argument file
(mode 0600, deleted after use, so they never show in a process list); they are
never logged or put in error messages.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from streams.broker import layout, paths, process
from streams.broker.cluster_dirs import (
    remove_cluster_files,
    running_processes,
    sweep_abandoned,
)
from streams.broker.config import (
    NodeSpec,
    ScramSpec,
    bootstrap_servers,
    broker_properties,
    new_cluster_id,
    node_specs,
    render_properties,
)
from streams.broker.errors import BrokerError
from streams.broker.jars import default_kafka_version, ensure_jars
from streams.broker.ports import free_ports, log_sizes, logs_show_port_conflict
from streams.broker.probe import broker_ids
from streams.broker.tools import find_java

DEFAULT_WAIT_TIMEOUT_S = 90.0
DEFAULT_HEAP = "512m"
SUPPORTED_NODE_COUNTS = (1, 3)
# Ports are chosen free but may be taken before the JVM binds them; retry that.
START_ATTEMPTS = 3
FORMAT_TIMEOUT_S = 120.0


class _PortConflict(Exception):
    """A node could not bind its port: retry the start with fresh ports."""


class LocalKafka:
    """A local Kafka cluster of 1 or 3 combined broker+controller nodes."""

    def __init__(
        self,
        nodes: int = 1,
        *,
        name: str | None = None,
        base_dir: Path | None = None,
        kafka_version: str | None = None,
        wait_timeout: float = DEFAULT_WAIT_TIMEOUT_S,
        stop_timeout: float = process.DEFAULT_STOP_TIMEOUT_S,
        heap: str = DEFAULT_HEAP,
        extra_config: Mapping[str, str] | None = None,
        jvm_options: Sequence[str] = (),
        keep_logs: bool = False,
        scram_users: Mapping[str, str] | None = None,
        sasl_mechanism: str = "SCRAM-SHA-256",
        inter_broker_user: str = "admin",
    ) -> None:
        """Describe a cluster; nothing runs until ``start()``.

        ``name`` picks the dir ``<base_dir>/<name>`` (default ``local-<random>``);
        ``base_dir`` defaults to ``<var>/kafka``. ``keep_logs`` keeps the nodes' logs
        after ``stop()`` (data is always removed). ``extra_config`` overrides any
        generated server property, on every node; ``jvm_options`` are added after the
        launcher's own (HotSpot lets later options win).

        ``scram_users`` (name -> password) turns on SASL/SCRAM (``sasl_mechanism``) on
        the client listener; ``inter_broker_user`` (one of them) is what the brokers
        and the launcher's own clients log in as. Clients get their settings from
        ``client_config(user)``.
        """
        if nodes not in SUPPORTED_NODE_COUNTS:
            raise ValueError(f"nodes must be one of {SUPPORTED_NODE_COUNTS}, not {nodes}")
        self.name = name or f"local-{uuid.uuid4().hex[:8]}"
        if not layout.CLUSTER_NAME.match(self.name):
            raise ValueError(f"cluster name {self.name!r} must match {layout.CLUSTER_NAME.pattern}")
        self.node_count = nodes
        self.base_dir = base_dir or paths.clusters_dir()
        self.cluster_dir = self.base_dir / self.name
        self.kafka_version = kafka_version or default_kafka_version()
        self.wait_timeout = wait_timeout
        self.stop_timeout = stop_timeout
        self.heap = heap
        self.extra_config = dict(extra_config or {})
        self.jvm_options = list(jvm_options)
        self.keep_logs = keep_logs
        self.scram = (
            ScramSpec(scram_users, sasl_mechanism, inter_broker_user)
            if scram_users is not None
            else None
        )
        self.cluster_id: str | None = None
        self.startup_seconds: float | None = None
        self._specs: dict[int, NodeSpec] = {}
        self._procs: dict[int, process.NodeProcess] = {}
        # Where each node's logs ended when it was last spawned (see _check_alive).
        self._log_marks: dict[int, dict[Path, int]] = {}
        self._java: Path | None = None
        self._libs: Path | None = None
        self._owner_pid: int | None = None
        self._started_at = ""
        self._started = False

    # --- what callers read -------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        """``host:port,...`` of every node (clients skip the ones that are down)."""
        if not self._specs:
            raise BrokerError(f"kafka cluster '{self.name}' is not started")
        return bootstrap_servers(list(self._specs.values()))

    @property
    def security_protocol(self) -> str:
        """What clients must speak: ``PLAINTEXT``, or ``SASL_PLAINTEXT`` with SCRAM users."""
        return "PLAINTEXT" if self.scram is None else "SASL_PLAINTEXT"

    def client_config(self, user: str | None = None) -> dict[str, str]:
        """librdkafka security settings for ``user`` (default: the inter-broker user).

        Empty for a PLAINTEXT cluster, so ``{**base, **kafka.client_config()}`` suits both.
        """
        if self.scram is None:
            if user is not None:
                raise ValueError(f"kafka cluster '{self.name}' has no SCRAM users")
            return {}
        return self.scram.client_config(user)

    @property
    def node_ids(self) -> list[int]:
        return sorted(self._specs)

    def running_node_ids(self) -> list[int]:
        return sorted(i for i, proc in self._procs.items() if proc.is_running())

    def node_bootstrap(self, node_id: int) -> str:
        return self._spec(node_id).bootstrap

    def log_file(self, node_id: int) -> Path:
        return layout.server_log(self.cluster_dir, node_id)

    # --- whole cluster -----------------------------------------------------------

    def start(self) -> LocalKafka:
        """Format storage, start every node, return once all of them serve requests.

        Raises BrokerError (one-line message) if java/mvn/jars are missing or a node
        does not come up within ``wait_timeout``; whatever was started is then
        killed and its data removed (logs are kept for the message to point at).
        """
        if self._started:
            raise BrokerError(f"kafka cluster '{self.name}' is already started")
        began = time.monotonic()
        self._java = find_java()
        self._libs = ensure_jars(self.kafka_version)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        sweep_abandoned(self.base_dir)
        self._claim_cluster_dir()
        self._owner_pid = os.getpid()
        # If this process ends without stop() (SIGTERM, an exception that ends the
        # program), the exit hooks stop the JVMs and then remove the data as stop() would.
        process.add_exit_cleanup(id(self), self._remove_files)
        self._started_at = datetime.now(tz=UTC).isoformat(timespec="seconds")
        try:
            for attempt in range(1, START_ATTEMPTS + 1):
                try:
                    self._start_once()
                except _PortConflict as exc:
                    self._abort()
                    if attempt == START_ATTEMPTS:
                        raise BrokerError(
                            f"kafka cluster '{self.name}' could not bind free loopback ports "
                            f"in {START_ATTEMPTS} attempts; see {exc}"
                        ) from None
                    # Fresh dir, so the old "Address already in use" lines cannot make a
                    # later, different failure look like a port conflict.
                    shutil.rmtree(self.cluster_dir, ignore_errors=True)
                else:
                    self._started = True
                    self.startup_seconds = time.monotonic() - began
                    return self
        except BaseException:
            self._abort()
            # The logs the error points at must survive this process's exit.
            process.remove_exit_cleanup(id(self))
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL after ``stop_timeout``) and remove data."""
        if not self._started:  # never started, or a failed start already cleaned up
            return
        self._started = False
        procs = list(self._procs.values())
        process.stop_all(procs, timeout=self.stop_timeout)
        for proc in procs:
            process.unregister(proc)
        self._procs.clear()
        process.remove_exit_cleanup(id(self))
        self._remove_files()

    def _remove_files(self) -> None:
        if self.cluster_dir.exists():
            remove_cluster_files(self.cluster_dir, keep_logs=self.keep_logs)

    def detach(self) -> None:
        """Let the cluster outlive this process (``lifecycle kafka up``).

        It is no longer stopped at exit; stop it with ``lifecycle kafka down``.
        """
        for proc in self._procs.values():
            process.detach(proc)
        process.remove_exit_cleanup(id(self))
        self._owner_pid = None
        self._write_state()

    def __enter__(self) -> LocalKafka:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- one node, for fault tests -------------------------------------------------

    def kill_node(self, node_id: int) -> None:
        """SIGKILL one node (a crash: no controlled shutdown, no flush)."""
        proc = self._proc(node_id)
        proc.kill()
        self._forget_process(node_id, proc)

    def stop_node(self, node_id: int, timeout: float | None = None) -> None:
        """Stop one node cleanly (SIGTERM: controlled shutdown moves its leaderships)."""
        proc = self._proc(node_id)
        process.stop_all([proc], timeout=self.stop_timeout if timeout is None else timeout)
        self._forget_process(node_id, proc)

    def start_node(self, node_id: int) -> None:
        """Restart a stopped or killed node with its old ports and data; wait until it serves."""
        spec = self._spec(node_id)
        if node_id in self.running_node_ids():
            raise BrokerError(f"kafka node {node_id} of '{self.name}' is already running")
        self._spawn(spec)
        try:
            self._wait_ready([spec], expected_ids=set(self.running_node_ids()))
        except _PortConflict:
            raise BrokerError(
                f"kafka node {node_id} of '{self.name}' cannot restart: port "
                f"{spec.broker_port} or {spec.controller_port} was taken by another process"
            ) from None
        self._write_state()

    # --- internals -------------------------------------------------------------------

    def _spec(self, node_id: int) -> NodeSpec:
        try:
            return self._specs[node_id]
        except KeyError:
            raise BrokerError(
                f"kafka cluster '{self.name}' has no node {node_id} (nodes: {self.node_ids})"
            ) from None

    def _proc(self, node_id: int) -> process.NodeProcess:
        self._spec(node_id)
        proc = self._procs.get(node_id)
        if proc is None or not proc.is_running():
            raise BrokerError(f"kafka node {node_id} of '{self.name}' is not running")
        return proc

    def _forget_process(self, node_id: int, proc: process.NodeProcess) -> None:
        process.unregister(proc)
        self._procs.pop(node_id, None)
        process.remove_pid_file(layout.node_dir(self.cluster_dir, node_id))
        self._write_state()

    def _claim_cluster_dir(self) -> None:
        if not self.cluster_dir.exists():
            return
        if running_processes(self.cluster_dir):
            state = layout.read_state(self.cluster_dir)
            where = f" at {state.bootstrap_servers}" if state else ""
            raise BrokerError(
                f"a kafka cluster named '{self.name}' is already running{where}: stop it with "
                f"`lifecycle kafka down --name {self.name}` or choose another name"
            )
        # Leftovers of a stopped or failed cluster of the same name: start afresh.
        shutil.rmtree(self.cluster_dir)

    def _start_once(self) -> None:
        self.cluster_id = new_cluster_id()
        specs = node_specs(free_ports(2 * self.node_count))
        self._specs = {spec.node_id: spec for spec in specs}
        for spec in specs:
            self._write_node_files(spec, specs)
        # Written before any JVM runs, so that if this process dies mid-start the
        # next start (any name) finds the owner gone and sweeps the leftovers.
        self._write_state()
        self._format_storage(specs)
        for spec in specs:
            self._spawn(spec)
        self._wait_ready(specs, expected_ids=set(self._specs))

    def _write_node_files(self, spec: NodeSpec, cluster: Sequence[NodeSpec]) -> None:
        node_id = spec.node_id
        layout.logs_dir(self.cluster_dir, node_id).mkdir(parents=True, exist_ok=True)
        props = broker_properties(
            spec,
            cluster,
            layout.data_dir(self.cluster_dir, node_id),
            self.extra_config,
            scram=self.scram,
        )
        path = layout.properties_file(self.cluster_dir, node_id)
        if self.scram is None:
            path.write_text(render_properties(props), encoding="utf-8")
        else:  # the inter-broker password is in it
            _write_private(path, render_properties(props))

    def _jvm_options(self, node_id: int, heap: str) -> list[str]:
        return [
            f"-Xmx{heap}",
            "-XX:+UseSerialGC",  # one GC thread: cheap on small CI machines
            # C1 only: ~20% faster start-up (measured 2.5 s -> 2.0 s for one node), and
            # no C2 compiler threads competing for 2 cores; peak speed is not what
            # test brokers need. ``jvm_options`` can put "-XX:TieredStopAtLevel=4" back.
            "-XX:TieredStopAtLevel=1",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={paths.LOG4J2_FILE}",
            f"-Dkafka.logs.dir={layout.logs_dir(self.cluster_dir, node_id)}",
            *self.jvm_options,
            "-cp",
            f"{self._libs}/*",
        ]

    def _format_storage(self, specs: Sequence[NodeSpec]) -> None:
        """Run kafka-storage format for every node, in parallel (a JVM each, ~1 s)."""
        assert self._java is not None
        running: list[tuple[NodeSpec, subprocess.Popen[bytes], Path]] = []
        arg_files: list[Path] = []
        try:
            for spec in specs:
                log = layout.logs_dir(self.cluster_dir, spec.node_id) / "format.log"
                tool_args = [
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    str(self.cluster_id),
                    "-c",
                    str(layout.properties_file(self.cluster_dir, spec.node_id)),
                ]
                if self.scram is not None:
                    # Passwords go in a java @argfile, not on the command line (which
                    # any local user can read in /proc).
                    arg_file = layout.node_dir(self.cluster_dir, spec.node_id) / "format.args"
                    _write_private(arg_file, format_arg_file(tool_args, self.scram))
                    arg_files.append(arg_file)
                    tool_args = [f"@{arg_file}"]
                command = [
                    str(self._java),
                    *self._jvm_options(spec.node_id, heap="256m"),
                    *tool_args,
                ]
                with log.open("wb") as out:
                    popen = subprocess.Popen(
                        command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
                    )
                running.append((spec, popen, log))
            for spec, popen, log in running:
                code = popen.wait(timeout=FORMAT_TIMEOUT_S)
                if code != 0:
                    raise BrokerError(
                        f"formatting KRaft storage for kafka node {spec.node_id} of "
                        f"'{self.name}' failed (exit {code}); see {log}"
                    )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(
                f"formatting KRaft storage for '{self.name}' took over {FORMAT_TIMEOUT_S:.0f}s; "
                f"see {layout.logs_dir(self.cluster_dir, 1) / 'format.log'}"
            ) from exc
        finally:
            for _, popen, _ in running:
                if popen.poll() is None:
                    popen.kill()
                    popen.wait()
            for arg_file in arg_files:
                arg_file.unlink(missing_ok=True)

    def _spawn(self, spec: NodeSpec) -> None:
        assert self._java is not None
        node_id = spec.node_id
        props = layout.properties_file(self.cluster_dir, node_id)
        command = [
            str(self._java),
            *self._jvm_options(node_id, self.heap),
            "kafka.Kafka",
            str(props),
        ]
        self._log_marks[node_id] = log_sizes(self._node_logs(node_id))
        proc = process.NodeProcess.spawn(
            command,
            cwd=layout.node_dir(self.cluster_dir, node_id),
            log_file=layout.stdout_log(self.cluster_dir, node_id),
            marker=str(props),
        )
        # Registered before anything else can fail, so no path leaves it orphaned.
        if self._owner_pid is not None:
            process.register(proc)
        else:
            process.detach(proc)
        self._procs[node_id] = proc
        process.write_pid_file(layout.node_dir(self.cluster_dir, node_id), proc.pid)
        self._write_state()

    def _wait_ready(self, specs: Sequence[NodeSpec], expected_ids: set[int]) -> None:
        """Until each node in ``specs`` answers and reports all ``expected_ids`` as live."""
        deadline = time.monotonic() + self.wait_timeout
        pending = list(specs)
        while True:
            for spec in list(pending):
                self._check_alive(spec.node_id)
                remaining = deadline - time.monotonic()
                ids = broker_ids(
                    spec.bootstrap,
                    timeout=max(0.5, min(2.0, remaining)),
                    client_config=self.client_config(),
                )
                if ids is not None and expected_ids <= ids:
                    pending.remove(spec)
            if not pending:
                return
            if time.monotonic() >= deadline:
                node_id = pending[0].node_id
                raise BrokerError(
                    f"kafka cluster '{self.name}' not up within {self.wait_timeout:g}s "
                    f"(node {node_id} not serving); see {self.log_file(node_id)}"
                )
            time.sleep(0.2)

    def _node_logs(self, node_id: int) -> list[Path]:
        return [self.log_file(node_id), layout.stdout_log(self.cluster_dir, node_id)]

    def _check_alive(self, node_id: int) -> None:
        """Raise if the node has failed: exited, or (still running) cannot bind its port."""
        # A bind failure is checked for while the JVM still runs: it takes several
        # seconds to exit after one, and the retry need not wait for that.
        if logs_show_port_conflict(self._log_marks.get(node_id, {})):
            raise _PortConflict(self.log_file(node_id))
        code = self._procs[node_id].exit_code()
        if code is None:
            return
        log = next((p for p in self._node_logs(node_id) if p.exists() and p.stat().st_size), None)
        raise BrokerError(
            f"kafka node {node_id} of '{self.name}' exited with code {code} during start-up; "
            f"see {log or self.log_file(node_id)}"
        )

    def _abort(self) -> None:
        """Undo a failed start: kill at once (nothing to shut down cleanly), drop data."""
        procs = list(self._procs.values())
        for proc in procs:
            proc.kill()
            process.unregister(proc)
        self._procs.clear()
        if self.cluster_dir.exists():
            remove_cluster_files(self.cluster_dir, keep_logs=True)

    def _write_state(self) -> None:
        if not self._specs or not self.cluster_dir.exists():
            return
        state = layout.ClusterState(
            name=self.name,
            kafka_version=self.kafka_version,
            cluster_id=str(self.cluster_id),
            bootstrap_servers=self.bootstrap_servers,
            started_at=self._started_at,
            owner_pid=self._owner_pid,
            nodes=[
                layout.NodeState(
                    node_id=spec.node_id,
                    broker_port=spec.broker_port,
                    controller_port=spec.controller_port,
                    pid=self._procs[spec.node_id].pid if spec.node_id in self._procs else None,
                )
                for spec in self._specs.values()
            ],
        )
        layout.write_state(self.cluster_dir, state)


def format_arg_file(tool_args: Sequence[str], scram: ScramSpec) -> str:
    """A java @argfile: the StorageTool class, its arguments and the SCRAM users, one a line.

    Each argument is quoted; ``ScramSpec`` admits no quote, backslash or space in
    names and passwords, so nothing needs escaping.
    """
    args = [*tool_args, *scram.storage_args()]
    return "".join(f'"{arg}"\n' for arg in args)


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner can read (it holds passwords)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
