"""`edge_sdk.serve(...)`: the device daemon from Python, a thin function over the daemon (re-exported by
`edge_sdk` lazily; it lives here because the facade layer may not import the apps)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from edge_sdk.apps.daemon.config import DaemonConfig, daemon_config
from edge_sdk.apps.daemon.loaded import BundleSource, DirectorySource
from edge_sdk.errors import ConfigError, RuntimeFailure

if TYPE_CHECKING:
    from edge_sdk.bundle import Bundle

START_TIMEOUT_S = 60.0


class RunningDaemon:
    """A daemon serving in a thread of this process: `url`, `stop()`, and a context manager that stops it."""

    def __init__(self, source: BundleSource, config: DaemonConfig) -> None:
        from edge_sdk.apps.daemon.server import build, uvicorn_server

        self.config = config
        self.app = build(source, config)
        self._server = uvicorn_server(self.app, config.model_copy(update={"log_level": "warning"}))
        self._thread = threading.Thread(target=self._server.run, name="edge-sdk-daemon", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeFailure(f"the daemon did not start on {config.host}:{config.port} (port in use?)")
            time.sleep(0.02)
        port = self._server.servers[0].sockets[0].getsockname()[1] if config.port == 0 else config.port
        self.url = f"http://{config.host}:{port}"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=self.config.drain_timeout_s + 10)
        self.app.state.pool.close()

    def __enter__(self) -> RunningDaemon:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()


def serve(
    *bundles: str | Path | Bundle,
    store: str | Path | None = None,
    background: bool = False,
    **options: Any,
) -> RunningDaemon | None:
    """Serve bundle paths, or the active versions of an install `store`, with the device daemon.

    `options` are the daemon's settings by their DaemonConfig names (`port=8080`, `api_keys={"k"}`,
    `concurrency_per_model=2`, `cloud_url=...`; `edge-sdk serve --help` lists them as flags). Blocks until
    SIGTERM/SIGINT (then drains), or with `background=True` serves from a thread and returns a RunningDaemon
    (`port=0` picks a free port; its `url` says which).
    """
    source: BundleSource
    if bool(bundles) == (store is not None):
        raise ConfigError("give bundle paths or store= (one of them)")
    if store is not None:
        from edge_sdk.apps.daemon.store_source import StoreSource

        source = StoreSource(Path(store))
    else:
        source = DirectorySource([Path(b) for b in _flat(bundles)])
    config = daemon_config(**options)
    if background:
        return RunningDaemon(source, config)
    from edge_sdk.apps.daemon.server import serve as serve_forever

    serve_forever(source, config)
    return None


def _flat(items: Sequence[Any]) -> list[Any]:
    """Bundle objects or paths -> paths."""
    from edge_sdk.bundle import Bundle

    return [b.root if isinstance(b, Bundle) else b for b in items]
