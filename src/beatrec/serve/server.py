"""``beatrec serve --run RUN``: load the run, bind the socket, run uvicorn."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from beatrec.errors import ConfigError


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one, read back with ``getsockname``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    sock.listen(2048)
    return sock


def serve(run: Path, host: str = "127.0.0.1", port: int = 8000, api_key_env: str | None = None,
          config: Path | None = None, overrides: list[str] | None = None, quiet: bool = False) -> None:
    """Serve ``run`` until interrupted. ``--set align.KEY=VALUE`` overrides go to the stage-2 config, the rest to
    :class:`~beatrec.serve.config.ServeConfig`."""
    import uvicorn

    from beatrec.config import load_yaml
    from beatrec.serve.app import create_app
    from beatrec.serve.config import ServeConfig
    from beatrec.serve.engine import Engine

    overrides = overrides or []
    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise ConfigError(f"--api-key-env {api_key_env}: that environment variable is not set or empty")
    cfg = load_yaml(ServeConfig, config, [o for o in overrides if not o.startswith("align.")])
    sock = bind(host, port)
    engine = Engine(run, cfg, [o[len("align."):] for o in overrides if o.startswith("align.")])
    app = create_app(engine, api_key)
    h, p = sock.getsockname()[:2]
    shown = f"[{h}]" if ":" in h else h
    print(f"beatrec serve: {engine.ds.name} run {run} on http://{shown}:{p}/ (API docs at /docs"
          + (f"; /v1 needs X-API-Key from ${api_key_env}" if api_key else "") + ")", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning" if quiet else "info", access_log=not quiet))
    server.run(sockets=[sock])
