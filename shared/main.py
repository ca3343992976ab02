"""``python -m services.<name> [serve|migrate]``: one entry point for every service."""

from __future__ import annotations

import argparse
import signal
import socket

import uvicorn

from shared import logging as arrears_logging
from shared import migrations
from shared.service import Build, ServiceRuntime, create_app
from shared.settings import ServiceSettings


def main(settings_class: type[ServiceSettings], build: Build, argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m services.{settings_class.service_name}")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "migrate"])
    args = parser.parse_args(argv)
    settings = settings_class()
    arrears_logging.configure(settings.service_name, settings.log_level)
    if args.command == "migrate":
        migrations.upgrade(settings.service_name, settings.database_url)
        return 0
    runtime = ServiceRuntime(settings, build)
    # uvicorn re-raises the signal it caught once it has shut down, restoring the handlers it
    # found; these make that re-raise a no-op so a drained service exits 0, not by the signal.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    # uvicorn turns SIGTERM/SIGINT into a graceful shutdown: it stops accepting connections,
    # drains requests, then runs the lifespan exit, which drains the consumers and the relay.
    config = uvicorn.Config(
        create_app(runtime),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
    )
    server = uvicorn.Server(config)
    if not settings.http_reuse_port:
        server.run()
        return 0
    # Replicas on one host share the port: the kernel spreads connections over every process
    # listening with SO_REUSEPORT, so each replica serves HTTP and none is a front door.
    sock = socket.socket(socket.AF_INET6 if ":" in settings.http_host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((settings.http_host, settings.http_port))
    sock.set_inheritable(True)
    server.run(sockets=[sock])
    return 0
