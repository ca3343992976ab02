"""`make up` / `make down` as an operator runs them, on ports and a folder of their own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from scripts import stack
from tests.support.databases import migrated_database
from tests.support.infra import Infra

ROOT = Path(__file__).resolve().parents[2]
PORTS = {"ledger": 28001, "scheduler": 28002, "notifier": 28003, "bureau": 28004, "desk": 28005}


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:  # noqa: S310 - loopback only
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.mark.timeout(400)
def test_up_brings_every_service_ready_and_down_leaves_no_process(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "ARREARS_STACK_DIR": str(tmp_path / "stack"),
        "ARREARS_KAFKA_PORT": "29092",
        "ARREARS_KAFKA_CONTROLLER_PORT": "29093",
        "ARREARS_PG_PORT": "25432",
        "ARREARS_TOPIC_PARTITIONS": "3",
        "ARREARS_PARTNERS_PORT": "28090",
    }
    env.pop("DATABASE_URL", None)
    cfg = stack.StackConfig(
        state_dir=tmp_path / "stack",
        kafka_port=29092,
        controller_port=29093,
        pg_port=25432,
        database_url=None,
        service_ports=dict(PORTS),
        partners_port=28090,
    )
    launcher = [sys.executable, "-m", "scripts.stack"]
    # The launcher reads the service ports from the same defaults the settings use; here they
    # are moved out of the way of a developer's own `make up`.
    for name, port in PORTS.items():
        env[f"ARREARS_{name.upper()}_PORT"] = str(port)
    try:
        started = time.monotonic()
        up = subprocess.run(
            [*launcher, "up"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        elapsed = time.monotonic() - started
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        # a newcomer is told where the desk is and how to sign in
        assert f"The desk: http://127.0.0.1:{PORTS['desk']}/login" in up.stdout
        assert "wang     demo-collector-pass    collector" in up.stdout
        for name, port in PORTS.items():
            code, body = http_get(f"http://127.0.0.1:{port}/readyz")
            assert code == 200, f"{name}: {body}"
            assert json.loads(body) == {"status": "ready"}
        again = subprocess.run(
            [*launcher, "up"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        assert again.returncode == 0
        assert "kafka already running" in again.stdout
        assert all(f"{name} already running" in again.stdout for name in PORTS)
        status = subprocess.run(
            [*launcher, "status"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
        assert status.returncode == 0, status.stdout
        print(f"stack up in {elapsed:.1f}s")
    finally:
        pids = {n: stack.running_pid(cfg, n) for n in ("kafka", "partners", *PORTS)}
        down = subprocess.run(
            [*launcher, "down"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
        )
    assert down.returncode == 0, down.stderr[-3000:]
    for name, pid in pids.items():
        assert pid is not None, f"{name} was not running"
        assert not stack._pid_alive(pid), f"{name} (pid {pid}) outlived `down`"
    assert not stack.port_open(29092)
    assert not stack.port_open(25432)
    assert not any(stack.port_open(p) for p in PORTS.values())


@pytest.mark.timeout(120)
async def test_sigterm_finishes_in_flight_work_and_exits_cleanly(kafka: str, infra: Infra) -> None:
    url = await migrated_database(infra.admin_url, "arrears_ledger_sigterm_test", "ledger")
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "LEDGER_DATABASE_URL": url,
        "LEDGER_HTTP_PORT": "28101",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "services.ledger"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stdout.read().decode()[-3000:]  # type: ignore[union-attr]
            try:
                if http_get("http://127.0.0.1:28101/readyz")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.3)
        else:
            pytest.fail("ledger never became ready")
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0
    lines = [json.loads(line) for line in output.decode().splitlines() if line.startswith("{")]
    messages = [line["message"] for line in lines]
    assert "ledger stopped" in messages
    assert not [line for line in lines if line["level"] == "ERROR"]
