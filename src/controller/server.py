"""`bgctl serve`: uvicorn on a Unix socket (default) or HOST:PORT, with TLS when given a cert."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import uvicorn

from bgtui.protocol.errors import Refused
from controller.api import build_app
from controller.home import ControllerHome
from controller.lifecycle import Controller


def parse_listen(listen: str | None, home: ControllerHome) -> tuple[str | None, str, int]:
    """(unix socket path, host, port) from `unix:PATH`, `HOST:PORT` or nothing."""
    if not listen:
        return str(home.socket_path), "", 0
    if listen.startswith("unix:"):
        return listen.removeprefix("unix:"), "", 0
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise Refused(f"bad --listen {listen!r}: use unix:PATH or HOST:PORT")
    return None, host.strip("[]"), int(port)


def serve(
    home: ControllerHome,
    listen: str | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    log_level: str = "info",
) -> None:
    """Runs the controller until SIGTERM/SIGINT; shutdown tears down live sessions first."""
    home.require()
    if bool(tls_cert) != bool(tls_key):
        raise Refused("give both --tls-cert and --tls-key, or neither")
    uds, host, port = parse_listen(listen, home)
    if uds and Path(uds).exists():
        if Path(uds).is_socket():
            os.unlink(uds)  # left by a killed controller
        else:
            raise Refused(f"{uds}: exists and is not a socket")
    controller = Controller(home)
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    config = uvicorn.Config(
        build_app(controller),
        uds=uds,
        host=host or "127.0.0.1",
        port=port or 8443,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=3,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    # uvicorn shuts down gracefully on SIGTERM/SIGINT and then re-raises the signal to the
    # previous handler; a no-op there makes a clean shutdown exit 0, as service managers expect.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    where = f"unix:{uds}" if uds else f"{'https' if tls_cert else 'http'}://{host}:{port}"
    logging.getLogger("bgctl").info("controller %s listening on %s", controller.config.id, where)
    server.run()
