"""Servers of a drill's own, as hospitals run them: PostgreSQL under Patroni on an etcd,
PgBouncer, RabbitMQ clusters and gunicorn. Each runs on loopback, on free ports, in a folder
of its own, and is stopped by its PID when the drill ends; none touches the machine's shared
PostgreSQL, Redis or RabbitMQ (SERVICES.md). The bench (`bench/`) runs the same drills at
full size.

PostgreSQL and PgBouncer refuse to run as root: as root, they run as the `postgres` user that
Debian's PostgreSQL package makes, in folders it owns.
"""

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from tests.servers import ROOT, free_port, wait_until

PG_BIN = Path(sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1])
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")


def _service_user() -> str | None:
    """The user PostgreSQL and PgBouncer run as: `postgres` when we are root."""
    return "postgres" if os.geteuid() == 0 else None


def drill_folder(name: str) -> Path:
    """A folder of the drill's own, which the service user may write."""
    folder = Path(tempfile.mkdtemp(prefix=f"tracker-{name}-"))
    user = _service_user()
    if user:
        entry = pwd.getpwnam(user)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    return folder


def _chown(path: Path) -> None:
    user = _service_user()
    if user:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal a process and everything below it, children first listed (by PID, never by
    name)."""
    for child in _children(pid):
        kill_tree(child, sig)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    # A zombie has exited; only its parent's wait is missing.
    return not (status.exists() and status.read_text().split()[2] == "Z")


def _http_json(url: str, timeout: float = 2.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        body = error.read()
        try:
            return error.code, json.loads(body or b"null")
        except ValueError:
            return error.code, None
    except (OSError, ValueError):
        return None, None


class Process:
    """A server process of the drill's own, in its own session, its output in a log file."""

    def __init__(self, name: str, argv: list[str], *, log: Path, env=None, user=None, cwd=None):
        self.name, self.argv, self.log_path = name, argv, log
        self.env, self.user, self.cwd = env, user, cwd
        self.process = None

    def start(self):
        self.log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            self.argv,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=self.env,
            user=self.user,
            cwd=self.cwd,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self):
        if self.process is not None:
            kill_tree(self.process.pid)
            self.process.wait(timeout=10)
            self.log.close()

    def stop(self, timeout: float = 20):
        if self.running():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                kill_tree(self.process.pid)
                self.process.wait(timeout=10)
        if self.process is not None:
            self.log.close()


def _service_env() -> dict:
    """A plain environment for Debian's own Python tools (Patroni) and the servers: not this
    project's virtualenv."""
    return {
        "PATH": f"{PG_BIN}:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": "/tmp",
    }


# etcd and Patroni.


class Etcd:
    """A one-node etcd for Patroni's leader key."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.client_port, self.peer_port = free_port(), free_port()
        self.process = None

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def start(self):
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.process = Process(
            "etcd",
            [
                shutil.which("etcd") or "etcd",
                "--name",
                "drill",
                "--data-dir",
                str(self.folder / "etcd"),
                "--listen-client-urls",
                self.client_url,
                "--advertise-client-urls",
                self.client_url,
                "--listen-peer-urls",
                peer,
                "--initial-advertise-peer-urls",
                peer,
                "--initial-cluster",
                f"drill={peer}",
                "--initial-cluster-state",
                "new",
                "--log-level",
                "warn",
            ],
            log=self.folder / "etcd.log",
            env=_service_env(),
        ).start()
        wait_until(
            lambda: _http_json(f"{self.client_url}/health")[0] == 200, timeout=30, what="etcd"
        )
        return self

    def stop(self):
        if self.process:
            self.process.stop()


PATRONI_CONFIG = """\
scope: {scope}
namespace: /tracker-drill/
name: {name}
log:
  level: WARNING
restapi:
  listen: 127.0.0.1:{api_port}
  connect_address: 127.0.0.1:{api_port}
etcd3:
  hosts: 127.0.0.1:{etcd_port}
bootstrap:
  dcs:
    # A leader that stops renewing its key for {ttl} s is gone: its synchronous standby takes
    # over. loop_wait + 2 × retry_timeout must not exceed ttl.
    ttl: {ttl}
    loop_wait: 1
    retry_timeout: {retry_timeout}
    maximum_lag_on_failover: 1048576
    # A commit returns only once the synchronous standby has it: a failover loses nothing
    # the application was told of. Patroni promotes only that standby.
    synchronous_mode: true
    postgresql:
      use_pg_rewind: true
      parameters:
        max_connections: 100
        wal_keep_size: 256MB
        synchronous_commit: "on"
        hot_standby: "on"
        wal_log_hints: "on"
  initdb:
    - encoding: UTF8
    - locale: C.UTF-8
postgresql:
  listen: 127.0.0.1:{pg_port}
  connect_address: 127.0.0.1:{pg_port}
  data_dir: {data_dir}
  bin_dir: {bin_dir}
  pgpass: {folder}/pgpass-{name}
  authentication:
    superuser:
      username: postgres
      password: drill
    replication:
      username: replicator
      password: drill
    rewind:
      username: postgres
      password: drill
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 trust
    - host replication replicator 127.0.0.1/32 trust
  parameters:
    unix_socket_directories: {folder}
    shared_buffers: 64MB
    fsync: "on"
    log_min_messages: warning
    logging_collector: "on"
    log_directory: {folder}/log-{name}
    log_filename: postgresql.log
{extra_parameters}
"""


class PatroniNode:
    """One PostgreSQL under its Patroni agent."""

    def __init__(self, cluster: "PatroniCluster", name: str):
        self.cluster, self.name = cluster, name
        self.pg_port, self.api_port = free_port(), free_port()
        self.data_dir = cluster.folder / name
        self.config_path = cluster.folder / f"{name}.yml"
        self.process = None

    def write_config(self, *, extra_parameters: dict[str, str]):
        extra = "".join(f"    {key}: {value!r}\n" for key, value in extra_parameters.items())
        self.config_path.write_text(
            PATRONI_CONFIG.format(
                scope=self.cluster.scope,
                name=self.name,
                api_port=self.api_port,
                etcd_port=self.cluster.etcd.client_port,
                ttl=self.cluster.ttl,
                retry_timeout=(self.cluster.ttl - 1) // 2,
                pg_port=self.pg_port,
                data_dir=self.data_dir,
                bin_dir=PG_BIN,
                folder=self.cluster.folder,
                extra_parameters=extra,
            )
        )
        _chown(self.config_path)

    def start(self):
        self.process = Process(
            f"patroni-{self.name}",
            [shutil.which("patroni") or "/usr/bin/patroni", str(self.config_path)],
            log=self.cluster.folder / f"{self.name}.log",
            env=_service_env(),
            user=_service_user(),
            cwd=self.cluster.folder,
        ).start()
        return self

    def state(self) -> dict:
        """Patroni's word on this node: role ('master'/'primary' or 'replica') and state."""
        status, body = _http_json(f"http://127.0.0.1:{self.api_port}/patroni")
        return body if status and isinstance(body, dict) else {}

    def is_primary(self) -> bool:
        # GET /primary answers 200 on the leader only (Patroni's health endpoint for proxies).
        return _http_json(f"http://127.0.0.1:{self.api_port}/primary")[0] == 200

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def kill(self):
        """The machine gone at once: Patroni and PostgreSQL SIGKILLed (PostgreSQL runs in a
        session of its own, so it is killed by its own PID, with its backends)."""
        postmaster = self.postmaster_pid()
        if self.process is not None:
            kill_tree(self.process.pid)
        if postmaster:
            kill_tree(postmaster)
        if self.process is not None:
            self.process.process.wait(timeout=10)
            self.process.log.close()
            self.process = None

    def stop(self):
        if self.process is not None and self.process.running():
            self.process.stop(timeout=30)
        self.process = None
        postmaster = self.postmaster_pid()
        if postmaster and _alive(postmaster):
            kill_tree(postmaster)
            wait_until(lambda: not _alive(postmaster), timeout=10, what="postmaster gone")

    def psql(self, sql: str, *, db: str = "postgres") -> str:
        return psql(self.pg_port, sql, db=db)

    @property
    def log_path(self) -> Path:
        return self.cluster.folder / f"log-{self.name}" / "postgresql.log"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _server(port: int, user: str = "postgres") -> list[str]:
    return ["-h", "127.0.0.1", "-p", str(port), "-U", user]


def _psql(port: int, *, user: str = "postgres", db: str = "postgres") -> list[str]:
    return [str(PG_BIN / "psql"), *_server(port, user), "-d", db, "-X", "-A"]


def psql(port: int, sql: str, *, db: str = "postgres", user: str = "postgres") -> str:
    done = subprocess.run(
        [*_psql(port, user=user, db=db), "-t", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql],
        capture_output=True,
        text=True,
        timeout=60,
        env={**_service_env(), "PGCONNECT_TIMEOUT": "3"},
    )
    if done.returncode:
        raise RuntimeError(f"psql on port {port}: {done.stderr.strip()}")
    return done.stdout.strip()


class PatroniCluster:
    """PostgreSQL instances under Patroni on a one-node etcd, with synchronous replication.

    `url()` is the multi-host DATABASE_URL the application uses: libpq tries each host and
    keeps the one that accepts writes (target_session_attrs=read-write), so whichever node
    Patroni made primary is found by the next connection, with no proxy in between.
    """

    def __init__(self, *, nodes: int = 2, ttl: int = 10, log_statements: bool = False):
        self.folder = drill_folder("patroni")
        self.scope = f"tracker-{uuid.uuid4().hex[:8]}"
        self.ttl = ttl
        self.etcd = Etcd(self.folder)
        self.nodes = [PatroniNode(self, f"node{i + 1}") for i in range(nodes)]
        # Every statement in each node's log (log-<node>/postgresql.log): a drill reads there
        # what reached the replica.
        self.extra_parameters = {"log_statement": "all"} if log_statements else {}

    def start(self):
        self.etcd.start()
        first, *others = self.nodes
        for node in self.nodes:
            node.write_config(extra_parameters=self.extra_parameters)
        first.start()
        wait_until(first.is_primary, timeout=90, interval=0.5, what="the first node primary")
        for node in others:
            node.start()
        wait_until(self.synchronous, timeout=120, interval=0.5, what="a synchronous standby")
        return self

    def members(self) -> list[dict]:
        for node in self.nodes:
            status, body = _http_json(f"http://127.0.0.1:{node.api_port}/cluster")
            if status == 200 and body:
                return body.get("members", [])
        return []

    def synchronous(self) -> bool:
        """A leader and a synchronous standby streaming from it."""
        members = self.members()
        return any(m["role"] in ("leader", "master", "primary") for m in members) and any(
            m["role"] == "sync_standby" and m.get("state") in ("streaming", "running")
            for m in members
        )

    def maintenance(self, on: bool) -> None:
        """Patroni's maintenance mode (`patronictl pause`): it leaves PostgreSQL alone, so a
        drill may pause a replica's replay (which Patroni otherwise resumes)."""
        node = next(n for n in self.nodes if n.process)
        request = urllib.request.Request(
            f"http://127.0.0.1:{node.api_port}/config",
            data=json.dumps({"pause": on}).encode(),
            method="PATCH",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        wait_until(
            lambda: all(bool(n.state().get("pause")) == on for n in self.nodes if n.process),
            timeout=30,
            what=f"maintenance mode {'on' if on else 'off'}",
        )

    def primary(self) -> PatroniNode | None:
        return next((n for n in self.nodes if n.process and n.is_primary()), None)

    def standby(self) -> PatroniNode | None:
        return next((n for n in self.nodes if n.process and not n.is_primary()), None)

    def url(self, db: str, *, user: str = "postgres") -> str:
        hosts = ",".join(f"127.0.0.1:{n.pg_port}" for n in self.nodes)
        return f"postgres://{user}@{hosts}/{db}?target_session_attrs=read-write&connect_timeout=2"

    def stop(self):
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.kill()  # a drill's cluster: its data goes with the folder
        self.etcd.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()


# RabbitMQ.


class RabbitNode:
    """One RabbitMQ node of a drill's cluster: its own node name, ports and data."""

    def __init__(self, cluster: "RabbitCluster", index: int):
        self.cluster, self.index = cluster, index
        self.name = f"{cluster.prefix}-{index}@localhost"
        self.port, self.dist_port = free_port(), free_port()
        self.process = None

    def env(self) -> dict:
        folder = self.cluster.folder
        config = folder / f"node{self.index}.conf"
        return _service_env() | {
            # The Erlang cookie the nodes share (and rabbitmqctl reads) is in HOME.
            "HOME": str(folder),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(folder / "log"),
            "RABBITMQ_PID_FILE": str(folder / f"node{self.index}.pid"),
            "RABBITMQ_CONFIG_FILE": str(config),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(folder / "enabled_plugins"),
            # Not the machine's own node's settings (/etc/rabbitmq/rabbitmq-env.conf).
            "RABBITMQ_CONF_ENV_FILE": str(folder / "rabbitmq-env.conf"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def write_config(self):
        peers = "".join(
            f"cluster_formation.classic_config.nodes.{n.index} = {n.name}\n"
            for n in self.cluster.nodes
        )
        (self.cluster.folder / f"node{self.index}.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            "cluster_formation.peer_discovery_backend = classic_config\n"
            f"{peers}"
            "log.console = true\nlog.console.level = warning\nlog.file = false\n"
        )

    def start(self):
        self.process = Process(
            f"rabbitmq-{self.index}",
            [str(RABBITMQ_BIN / "rabbitmq-server")],
            log=self.cluster.folder / f"node{self.index}.log",
            env=self.env(),
        ).start()
        return self

    def ctl(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.name, "-q", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {self.name}: {done.stderr}")
        return done.stdout

    def wait_booted(self, timeout: float = 120):
        """Until the node has booted (`rabbitmqctl wait` on its PID file: the file appears
        once the VM is up, the command returns once the broker is)."""
        pid_file = self.cluster.folder / f"node{self.index}.pid"
        wait_until(pid_file.exists, timeout=timeout, interval=0.2, what=f"{self.name} started")
        self.ctl("wait", "--timeout", str(int(timeout)), str(pid_file), timeout=timeout + 10)
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.running()

    def kill(self):
        """The node's machine gone: SIGKILL, the Erlang VM and everything under it."""
        if self.process is not None:
            self.process.kill()
            self.process = None

    def stop(self):
        if self.running():
            with contextlib.suppress(Exception):
                self.ctl("stop", timeout=60)
            self.process.stop(timeout=30)
        self.process = None


class RabbitCluster:
    """Three RabbitMQ nodes of a drill's own, clustered (classic peer discovery), sharing an
    Erlang cookie; the task queue is a quorum queue with a member on each. The workers are
    given every node's URL (Celery's failover list) and move to a live node by themselves."""

    def __init__(self, *, nodes: int = 3):
        self.folder = Path(tempfile.mkdtemp(prefix="tracker-rabbitmq-"))
        self.prefix = f"tracker-{uuid.uuid4().hex[:6]}"
        self.nodes = [RabbitNode(self, i + 1) for i in range(nodes)]
        self.queue = f"tracker-cluster-{uuid.uuid4().hex[:6]}"

    def start(self):
        cookie = self.folder / ".erlang.cookie"
        cookie.write_text(uuid.uuid4().hex.upper())
        cookie.chmod(0o400)
        (self.folder / "enabled_plugins").write_text("[].\n")
        (self.folder / "rabbitmq-env.conf").write_text("")
        for node in self.nodes:
            node.write_config()
        first, *others = self.nodes
        first.start().wait_booted()
        for node in others:  # they join the first as they boot
            node.start()
        for node in others:
            node.wait_booted()
        wait_until(
            lambda: all(n.name in self.running_nodes() for n in self.nodes),
            timeout=60,
            what="three nodes clustered",
        )
        return self

    def running_nodes(self) -> list[str]:
        for node in self.nodes:
            if node.running():
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired, ValueError):
                    status = node.ctl("cluster_status", "--formatter", "json", timeout=30)
                    return json.loads(status)["running_nodes"]
        return []

    @property
    def url(self) -> str:
        """Every node, as Celery's failover list: `;` between URLs."""
        return ";".join(f"amqp://guest:guest@127.0.0.1:{n.port}//" for n in self.nodes)

    def worker_env(self) -> dict:
        return {"CELERY_BROKER_URL": self.url, "CELERY_TASK_DEFAULT_QUEUE": self.queue}

    @property
    def task_queue(self):
        from kombu import Queue

        return Queue(self.queue, routing_key=self.queue, queue_arguments={"x-queue-type": "quorum"})

    def node_on_port(self, port: int) -> RabbitNode:
        return next(n for n in self.nodes if n.port == port)

    def connected_nodes(self) -> set[RabbitNode]:
        """The nodes clients are connected to now (a connection's `port` is its node's)."""
        for node in self.nodes:
            if node.running():
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    ports = node.ctl("list_connections", "port", "--no-table-headers", timeout=30)
                    return {self.node_on_port(int(p)) for p in ports.split() if p.isdigit()}
        return set()

    def queue_members(self) -> int:
        """How many nodes the task queue has a member on."""
        for node in self.nodes:
            if node.running():
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    command = ["quorum_status", self.queue, "--formatter", "json"]
                    status = subprocess.run(
                        [str(RABBITMQ_BIN / "rabbitmq-queues"), "-n", node.name, "-q", *command],
                        env=node.env(),
                        capture_output=True,
                        text=True,
                        timeout=60,
                    )
                    if status.returncode == 0:
                        return len(json.loads(status.stdout))
        return 0

    def stop(self):
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.kill()  # a drill's nodes: their data goes with the folder
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()


# PgBouncer.


class PgBouncer:
    """PgBouncer in transaction pooling in front of a PostgreSQL: any database, passed through
    under the client's user name; a few server connections shared by many clients."""

    def __init__(self, *, server_port: int = 5432, pool_size: int = 20, users=("postgres",)):
        self.folder = drill_folder("pgbouncer")
        self.port, self.server_port, self.pool_size = free_port(), server_port, pool_size
        self.users = list(users)
        self.process = None

    def start(self):
        users = self.folder / "userlist.txt"
        users.write_text("".join(f'"{user}" ""\n' for user in self.users))
        config = self.folder / "pgbouncer.ini"
        config.write_text(
            f"""[databases]
* = host=127.0.0.1 port={self.server_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {users}
admin_users = postgres
stats_users = postgres
pool_mode = transaction
default_pool_size = {self.pool_size}
max_client_conn = 500
server_reset_query =
ignore_startup_parameters = extra_float_digits
logfile = {self.folder / "pgbouncer.log"}
pidfile = {self.folder / "pgbouncer.pid"}
"""
        )
        for path in (users, config):
            _chown(path)
        self.process = Process(
            "pgbouncer",
            [shutil.which("pgbouncer") or "/usr/sbin/pgbouncer", str(config)],
            log=self.folder / "stdout.log",
            env=_service_env(),
            user=_service_user(),
        ).start()
        wait_until(self._answers, timeout=20, what="pgbouncer")
        return self

    def _answers(self) -> bool:
        try:
            self.show("VERSION")
            return True
        except RuntimeError:
            return False

    def show(self, what: str) -> list[dict]:
        """`SHOW <what>` on PgBouncer's admin console, as rows of dicts."""
        options = ["-F", "\t", "-P", "footer=off", "-c", f"SHOW {what}"]
        done = subprocess.run(
            [*_psql(self.port, db="pgbouncer"), *options],
            capture_output=True,
            text=True,
            timeout=10,
            env=_service_env(),
        )
        if done.returncode:
            raise RuntimeError(done.stderr.strip())
        lines = done.stdout.strip().splitlines()
        header = lines[0].split("\t") if lines else []
        return [dict(zip(header, line.split("\t"), strict=False)) for line in lines[1:]]

    def stop(self):
        if self.process:
            self.process.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# gunicorn, as production runs the web process.


class Gunicorn:
    """`gunicorn -c config/gunicorn.conf.py config.wsgi` with the environment given."""

    def __init__(self, env: dict, *, workers: int = 2, log_dir: Path | None = None):
        self.port = free_port()
        self.env = env
        self.workers = workers
        self.log_dir = log_dir or ROOT / "var"
        self.process = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.process = Process(
            "gunicorn",
            [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "config.wsgi"],
            log=self.log_dir / f"gunicorn-{uuid.uuid4().hex[:6]}.log",
            env={
                **os.environ,
                **self.env,
                "GUNICORN_BIND": f"127.0.0.1:{self.port}",
                "WEB_CONCURRENCY": str(self.workers),
            },
            cwd=ROOT,
        ).start()
        wait_until(self._answers, timeout=60, what="gunicorn")
        return self

    def _answers(self) -> bool:
        status, _ = _http_json(f"{self.url}/healthz", timeout=5)
        return status is not None

    def output(self) -> str:
        return self.process.output() if self.process else ""

    def stop(self):
        if self.process:
            self.process.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def wait_for(predicate, *, timeout: float, what: str, interval: float = 0.2) -> float:
    """wait_until, returning the seconds it took."""
    started = time.monotonic()
    wait_until(predicate, timeout=timeout, interval=interval, what=what)
    return time.monotonic() - started


# The project run against a drill's servers.

# What a drill's own processes (commands, gunicorn, workers, clients) run with.
DRILL_ENV = {
    "SECRET_KEY": "drill-only-key",
    "DEBUG": "0",
    "EMAIL_URL": "dummymail://",
    "SMS_BACKEND": "null",
    "SECURE_SSL_REDIRECT": "0",
    "SECURE_COOKIES": "0",
    "OTP_REQUIRED": "0",
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
    "LOG_LEVEL": "INFO",
}


def manage(*args: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    """`manage.py <args>` in a process of its own, with the drill's environment and `env`."""
    clean = {k: v for k, v in os.environ.items() if k not in DRILL_ENV and k != "DATABASE_URL"}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=clean | DRILL_ENV | env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def copy_database(*, source_port: int, source_db: str, target_port: int, target_db: str):
    """pg_dump | pg_restore, without owners or grants: the schema and rows of a migrated
    database, into a new one on another server, in seconds rather than a migration's 20."""
    psql(target_port, f'CREATE DATABASE "{target_db}"')
    dump = subprocess.Popen(
        [str(PG_BIN / "pg_dump"), *_server(source_port), "-Fc", "-O", "-x", source_db],
        stdout=subprocess.PIPE,
        env=_service_env(),
    )
    restore = subprocess.run(
        [str(PG_BIN / "pg_restore"), *_server(target_port), "-O", "-x", "-e", "-d", target_db],
        stdin=dump.stdout,
        capture_output=True,
        text=True,
        env=_service_env(),
        timeout=300,
    )
    dump.stdout.close()
    if dump.wait(timeout=60) or restore.returncode:
        raise RuntimeError(f"copying {source_db}: {restore.stderr.strip()}")
