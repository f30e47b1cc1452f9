"""`edge-sdk sync` on a device: pull newer bundle versions from a registry into the device's store.

For each model: the registry's newest version (or the one asked for) against the store's active one. Newer
is downloaded into `<store>/.downloads/` (a cut download resumes with Range from where it stopped, also in a
later run), checked against the registry's sha256, then installed through BundleStore — which verifies every
file digest (and the signature with `trust`), runs the caller's check, and activates atomically. Equal is
skipped; lower is refused, naming both versions. A newer version already installed here but not active (the
operator rolled back from it) is held back: sync does not undo a rollback; a version newer still is taken.

Under a staged rollout the registry lists a version only to the devices its stage includes; when the rollout
aborts, the registry names the version withdrawn and a device running it rolls back to its previous version
(kept installed, as `edge-sdk rollback` does).
"""

from __future__ import annotations

import builtins
import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloud_sync import http
from cloud_sync.registry import REGISTRY_PREFIX, RegistryEntry
from cloud_sync.retry import RETRY_STATUSES, RetryPolicy, parse_retry_after
from edge_sdk.bundle.files import sha256_file
from edge_sdk.bundle.signing import TrustedKey
from edge_sdk.errors import BundleError, RegistryError, StoreError, TransferError, choices
from edge_sdk.fsutil import file_lock
from edge_sdk.semver import version_key
from edge_sdk.store import BundleStore, Check, InstalledModel

if TYPE_CHECKING:
    import httpx

DOWNLOADS = ".downloads"


class _Busy(TransferError):
    """The registry (or a proxy before it) answered with a status worth another try; maybe when (Retry-After)."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


Progress = Callable[[RegistryEntry, int], None]  # (what, bytes of it on disk so far)
Sent = Callable[[int], None]  # bytes uploaded so far


class Outcome(Enum):
    INSTALLED = "installed"
    UP_TO_DATE = "up to date"
    HELD = "held back"  # installed here but rolled back from: not re-activated by a sync
    ROLLED_BACK = "rolled back"  # the active version was withdrawn by an aborted rollout
    REFUSED = "refused"


@dataclass(frozen=True)
class Download:
    path: Path
    received: int  # bytes that came over the network in this run
    resumed_from: int  # bytes already on disk when this run started


@dataclass(frozen=True)
class Withdrawn:
    name: str
    version: str
    reason: str


@dataclass(frozen=True)
class SyncReport:
    name: str
    offered: str | None  # the registry's version considered
    active_before: str | None
    active_after: str | None
    outcome: Outcome
    detail: str
    download: Download | None = None


class RegistryClient:
    """Talks to a registry over HTTP; `transport` lets tests use an in-process app."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        attempts: int = 4,
        backoff_s: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.attempts = max(1, attempts)
        self.retry = RetryPolicy(attempts=self.attempts, base_delay_s=backoff_s, max_delay_s=30.0)
        self._http = http.sync_client(self.base_url, api_key=api_key, timeout_s=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def list(self, name: str | None = None) -> list[RegistryEntry]:
        return self.listing(name)[0]

    def listing(self, name: str | None = None) -> tuple[builtins.list[RegistryEntry], builtins.list[Withdrawn]]:
        """The entries this caller may take, and the versions withdrawn from it (aborted rollouts)."""
        response = self._request("GET", REGISTRY_PREFIX, params={"name": name} if name else None)
        body = response.json()
        withdrawn = [Withdrawn(w["name"], w["version"], w.get("reason", "")) for w in body.get("withdrawn", [])]
        return [RegistryEntry(**item) for item in body["data"]], withdrawn

    def publish(
        self, bundle_file: Path, *, progress: Callable[[int], None] | None = None, hold: bool = False
    ) -> tuple[RegistryEntry, bool]:
        """Upload an .edgebundle file (streamed); the registry's entry and whether it was new there. `hold`:
        offered to no device until a rollout opens it."""
        size = bundle_file.stat().st_size

        def pieces() -> Iterator[bytes]:
            sent = 0
            with bundle_file.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    yield chunk
                    sent += len(chunk)
                    if progress is not None:
                        progress(sent)

        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        path = REGISTRY_PREFIX + ("?hold=true" if hold else "")
        response = self._request("POST", path, content=pieces(), headers=headers, retry=False)
        return RegistryEntry(**response.json()), response.status_code == 201

    def download(self, entry: RegistryEntry, dest: Path, *, progress: Progress | None = None) -> Download:
        """Fetch `entry` into `dest`, resuming from what `dest` already holds; verify size and sha256.

        A cut connection or a busy answer (429, 5xx) is retried (with Range) up to `attempts` times; the
        partial file stays for a later run when they are used up. A finished file whose digest differs is
        deleted and refused.
        """
        import httpx

        dest.parent.mkdir(parents=True, exist_ok=True)
        resumed_from = dest.stat().st_size if dest.exists() else 0
        received, last_error = [0], ""  # received[0]: bytes written in this run, cut attempts included
        for attempt in range(self.attempts):
            have = dest.stat().st_size if dest.exists() else 0
            if have > entry.size:
                dest.unlink()
                have = 0
            if have == entry.size:
                break
            try:
                self._fetch(entry, dest, have, received, progress)
                break
            except (httpx.TransportError, _Busy) as exc:
                last_error = str(exc) if isinstance(exc, _Busy) else f"{type(exc).__name__}: {exc}"
                if attempt + 1 < self.attempts:
                    time.sleep(self.retry.delay(attempt, exc.retry_after_s if isinstance(exc, _Busy) else None))
        else:
            on_disk = dest.stat().st_size if dest.exists() else 0
            raise TransferError(
                f"downloading {entry.name} {entry.version} from {self.base_url} failed {self.attempts} times "
                f"({last_error}); {on_disk} of {entry.size} bytes are kept in {str(dest)!r} and the next sync "
                "resumes from there"
            )
        _check_digest(entry, dest)
        return Download(dest, received[0], resumed_from)

    # ------------------------------------------------------------------------------------------ internals
    def _fetch(
        self, entry: RegistryEntry, dest: Path, have: int, received: builtins.list[int], progress: Progress | None
    ) -> None:
        headers = {"Range": f"bytes={have}-", "If-Range": f'"{entry.sha256}"'} if have else {}
        url = f"{REGISTRY_PREFIX}/{entry.name}/{entry.version}"
        with self._http.stream("GET", url, headers=headers) as response:
            if response.status_code == 206:
                start = _range_start(response.headers.get("content-range", ""))
                if start != have:
                    raise TransferError(f"the registry answered Range bytes={have}- with bytes {start}-")
                mode = "ab"
            elif response.status_code == 200:
                have, mode = 0, "wb"  # the server ignored the Range (or the file changed): start over
            else:
                response.read()
                problem = f"GET {self.base_url}{url} answered {response.status_code}: {_message(response)}"
                if response.status_code in RETRY_STATUSES:
                    raise _Busy(problem, parse_retry_after(response.headers.get("retry-after")))
                raise TransferError(problem)
            etag = response.headers.get("etag", "").strip('"')
            if etag and etag != entry.sha256:
                raise RegistryError(
                    f"the registry serves {entry.name} {entry.version} with digest {etag[:12]}…, but its index says "
                    f"{entry.sha256[:12]}…: refusing the download"
                )
            with dest.open(mode) as out:
                for chunk in response.iter_raw():  # as it arrives: a cut keeps all that came
                    out.write(chunk)
                    received[0] += len(chunk)
                    have += len(chunk)
                    if progress is not None:
                        progress(entry, have)

    def _request(self, method: str, url: str, *, retry: bool = True, **kwargs: Any) -> httpx.Response:
        import httpx

        tries = self.attempts if retry else 1
        for attempt in range(tries):
            try:
                response = self._http.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                if attempt + 1 == tries:
                    raise TransferError(f"cannot reach the registry at {self.base_url}: {exc}") from None
                time.sleep(self.retry.delay(attempt))
                continue
            if response.status_code not in RETRY_STATUSES or attempt + 1 == tries:
                break
            time.sleep(self.retry.delay(attempt, parse_retry_after(response.headers.get("retry-after"))))
        if response.status_code >= 400:
            problem = f"{method} {self.base_url}{url} answered {response.status_code}: {_message(response)}"
            # the registry refused this request (conflict, invalid bundle, ...) vs. could not serve it now
            refused = response.status_code < 500 and response.status_code not in (401, 403, 408, 429)
            raise (RegistryError if refused else TransferError)(problem)
        return response


def _range_start(content_range: str) -> int:
    # "bytes 100-999/1000"
    try:
        return int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError):
        raise TransferError(f"the registry sent a malformed Content-Range {content_range!r}") from None


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200] or response.reason_phrase


def _check_digest(entry: RegistryEntry, path: Path) -> None:
    digest = sha256_file(path)
    if digest != entry.sha256:
        path.unlink()
        raise RegistryError(
            f"downloaded {entry.name} {entry.version} has sha256 {digest[:16]}…, the registry lists "
            f"{entry.sha256[:16]}…: corrupted or tampered in transit or on the server; deleted, nothing installed"
        )


def pick(entries: Sequence[RegistryEntry], name: str, version: str | None) -> RegistryEntry:
    """The entry to consider for `name`: the asked-for version, or the newest one."""
    mine = sorted((e for e in entries if e.name == name), key=lambda e: version_key(e.version))
    if not mine:
        names = sorted({e.name for e in entries})
        raise RegistryError(f"the registry has no model {name!r}; it has: {choices(names) or 'none'}")
    if version is None:
        return mine[-1]
    found = next((e for e in mine if e.version == version), None)
    if found is None:
        raise RegistryError(f"the registry has no {name} {version}; it has: {choices(e.version for e in mine)}")
    return found


def sync(
    client: RegistryClient,
    store: BundleStore,
    *,
    names: Sequence[str] = (),
    version: str | None = None,
    trust: Sequence[TrustedKey] | None = None,
    check: Check | None = None,
    progress: Progress | None = None,
) -> list[SyncReport]:
    """Bring each model (every model the registry has, unless `names`) to the registry's newest version."""
    if version is not None and len(names) != 1:
        raise RegistryError("a version can be asked for only together with exactly one model name")
    with _one_sync_at_a_time(store.root / DOWNLOADS):
        entries, withdrawn = client.listing(names[0] if len(names) == 1 else None)
        installed = {m.name: m for m in store.list()}
        pulled = {w.name for w in withdrawn if w.name in installed and installed[w.name].active == w.version}
        wanted = list(names) or sorted({e.name for e in entries} | pulled)
        reports = []
        for name in wanted:
            model = installed.get(name)
            active = model.active if model is not None else None
            gone = next((w for w in withdrawn if (w.name, w.version) == (name, active)), None)
            if gone is not None and model is not None:
                reports.append(_roll_back(store, model, gone))
                continue
            entry = pick(entries, name, version)
            if version is None and model is not None and _rolled_back_from(entry.version, model):
                detail = (
                    f"{name} {entry.version} is installed here but not active (rolled back to {model.active}): "
                    f"sync does not undo a rollback; ask for it with --name {name} --version {entry.version}"
                )
                reports.append(SyncReport(name, entry.version, model.active, model.active, Outcome.HELD, detail))
                continue
            before = model.active if model else None
            reports.append(_sync_one(client, store, entry, before, trust, check, progress))
        return reports


def _roll_back(store: BundleStore, model: InstalledModel, gone: Withdrawn) -> SyncReport:
    """The active version was withdrawn: back to the previous one, which stays installed for this."""
    if model.previous is None:
        detail = (
            f"{model.name} {gone.version} was withdrawn ({gone.reason}), but no earlier version is installed here "
            "to roll back to: it stays active"
        )
        return SyncReport(model.name, gone.version, model.active, model.active, Outcome.REFUSED, detail)
    after = store.rollback(model.name)
    detail = f"{model.name} {gone.version} was withdrawn ({gone.reason}): rolled back to {after.active}"
    return SyncReport(model.name, gone.version, model.active, after.active, Outcome.ROLLED_BACK, detail)


def _rolled_back_from(version: str, model: InstalledModel) -> bool:
    return model.active is not None and version in model.versions and version_key(version) > version_key(model.active)


@contextlib.contextmanager
def _one_sync_at_a_time(downloads: Path) -> Iterator[None]:
    """Two syncs appending to the same partial file would corrupt it: the second one is refused at once."""
    downloads.mkdir(parents=True, exist_ok=True)
    with file_lock(downloads / ".lock", wait_s=None) as acquired:
        if not acquired:
            raise StoreError(f"another sync is downloading into {str(downloads)!r}; try again when it ends")
        yield


def _sync_one(
    client: RegistryClient,
    store: BundleStore,
    entry: RegistryEntry,
    before: str | None,
    trust: Sequence[TrustedKey] | None,
    check: Check | None,
    progress: Progress | None,
) -> SyncReport:
    def report(outcome: Outcome, detail: str, after: str | None, download: Download | None = None) -> SyncReport:
        return SyncReport(entry.name, entry.version, before, after, outcome, detail, download)

    if before is not None and version_key(entry.version) == version_key(before):
        return report(Outcome.UP_TO_DATE, f"{entry.name} {before} is active, the registry's version", before)
    if before is not None and version_key(entry.version) < version_key(before):
        return report(
            Outcome.REFUSED,
            f"the registry offers {entry.name} {entry.version}, older than the active {before}: refusing a downgrade "
            f"(roll back with `edge-sdk rollback {entry.name}` if that is what you want)",
            before,
        )
    if trust is not None:
        ids = sorted(k.key_id for k in trust)
        if not entry.signed or entry.key_id not in ids:
            how = f"signed by key {entry.key_id}" if entry.signed else "not signed"
            return report(
                Outcome.REFUSED,
                f"the registry lists {entry.name} {entry.version} as {how}; this device accepts only bundles "
                f"signed by a trusted key ({', '.join(ids)}): not downloaded",
                before,
            )
    partial = store.root / DOWNLOADS / f"{entry.name}-{entry.version}-{entry.sha256[:16]}.edgebundle.part"
    try:
        download = client.download(entry, partial, progress=progress)
    except RegistryError as exc:  # a digest that does not match: never installed
        return report(Outcome.REFUSED, str(exc), before)
    try:
        model = store.install(partial, check=check, trust=trust)
    except BundleError as exc:
        partial.unlink(missing_ok=True)  # a refused bundle is not kept for another try
        return report(Outcome.REFUSED, str(exc), before, download)
    partial.unlink(missing_ok=True)
    return report(Outcome.INSTALLED, f"{entry.name} {model.active} installed and active", model.active, download)
