"""One way to make the HTTP clients of cloud_sync: base URL, bearer key, user agent, timeouts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_sdk.version import __version__

if TYPE_CHECKING:
    import httpx

USER_AGENT = f"edge-sdk/{__version__}"
CONNECT_TIMEOUT_S = 5.0  # an offline link fails this fast, whatever the read timeout


def headers(api_key: str | None) -> dict[str, str]:
    out = {"User-Agent": USER_AGENT}
    if api_key:
        out["Authorization"] = f"Bearer {api_key}"
    return out


def timeout(seconds: float | httpx.Timeout) -> httpx.Timeout:
    """Seconds to wait for the next byte; connecting gives up sooner."""
    import httpx

    if isinstance(seconds, httpx.Timeout):
        return seconds
    return httpx.Timeout(seconds, connect=min(seconds, CONNECT_TIMEOUT_S))


def async_client(
    base_url: str,
    *,
    api_key: str | None,
    timeout_s: float | httpx.Timeout,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    import httpx

    return httpx.AsyncClient(
        base_url=base_url.rstrip("/"), headers=headers(api_key), timeout=timeout(timeout_s), transport=transport
    )


def sync_client(
    base_url: str,
    *,
    api_key: str | None,
    timeout_s: float | httpx.Timeout,
    transport: httpx.BaseTransport | None = None,
) -> httpx.Client:
    import httpx

    return httpx.Client(
        base_url=base_url.rstrip("/"), headers=headers(api_key), timeout=timeout(timeout_s), transport=transport
    )
