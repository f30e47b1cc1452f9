"""Flash a verified bundle onto boards: copy (resumable), install on the device, activate, health-check, roll back.

Per target:  plan (fit?) ─► connect ─► copy to <store>/.incoming (resume from what is there) ─► `edge-sdk install` on
the device (digests, signature, golden set, atomic install) ─► activate ─► health check ─► rollback on failure.
A target that fails is reported with the stage and the reason; the others go on.
"""

from __future__ import annotations

import contextlib
import enum
import posixpath
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from edge_sdk.apps.flash.connect import open_transport
from edge_sdk.apps.flash.plan import fit_reports
from edge_sdk.apps.flash.targets import Scheme, Target
from edge_sdk.apps.flash.transport import Completed, Transport
from edge_sdk.bundle import Bundle, Manifest
from edge_sdk.bundle.files import sha256_file
from edge_sdk.errors import ConfigError, DeviceError, EdgeSDKError, StoreError


class Stage(enum.StrEnum):
    PLAN = "plan"  # checks before connecting: the options for this target, the fit to its profile
    CONNECT = "connect"
    UPLOAD = "upload"
    INSTALL = "install"
    HEALTH = "health"
    DONE = "done"


Event = Callable[[Target, Stage, int, int], None]  # target, stage, bytes done, bytes total


@dataclass(frozen=True)
class FlashOptions:
    activate: bool = False
    trust: tuple[Path, ...] = ()  # public keys here, copied to the device for its install
    device_trust: tuple[str, ...] = ()  # public keys already on the device
    identity: Path | None = None
    known_hosts: Path | None = None  # None: ~/.ssh/known_hosts
    accept_new_host: bool = False
    remote_cmd: str = "edge-sdk"
    health_url: str | None = None
    health_timeout_s: float = 30.0
    device_check: bool = True  # re-run the golden set on the device
    allow_downgrade: bool = False
    install_timeout_s: float = 900.0
    parallel: int = 4

    def __post_init__(self) -> None:
        if self.health_url and not self.activate:
            raise ConfigError("--health-url checks the newly active version: add --activate")
        if self.health_url:
            url = urlsplit(self.health_url)
            if url.scheme != "http" or not url.hostname:
                # checked now: a typo found after activation would roll a good version back
                raise ConfigError(
                    f"health URL {self.health_url!r} must be http://HOST[:PORT]/PATH as the board sees it, "
                    "e.g. http://127.0.0.1:8080/health/ready"
                )
        if self.parallel < 1:
            raise ConfigError(f"parallel must be at least 1, got {self.parallel}")


@dataclass(frozen=True)
class Release:
    """The bundle as it travels: one reproducible archive, verified here first."""

    archive: Path
    sha256: str
    size: int
    bundle: Bundle  # opened and verified here (an archive's unpacked copy lives as long as this)

    @property
    def manifest(self) -> Manifest:
        return self.bundle.manifest

    @property
    def remote_name(self) -> str:
        # the digest in the name: a partial copy is resumed only by the same bytes
        return f"{self.manifest.name}-{self.manifest.version}-{self.sha256[:16]}.edgebundle"


@dataclass(frozen=True)
class FlashResult:
    target: Target
    ok: bool
    stage: Stage  # where it ended: DONE, or the stage that failed
    message: str
    sent_bytes: int = 0
    total_bytes: int = 0
    active: str | None = None  # the model's active version on the device afterwards, when known
    log: tuple[str, ...] = field(default=())


def prepare(bundle: Path, workdir: Path, trust: Sequence[Path] = ()) -> Release:
    """Verify a bundle here (and its signature, with `trust`) and pack a directory into a reproducible archive."""
    from edge_sdk.bundle.signing import load_trusted

    keys = [load_trusted(p) for p in trust] or None
    opened = Bundle.open(bundle, trust=keys)
    archive = bundle if bundle.is_file() else opened.pack(workdir / f"{opened.name}-{opened.manifest.version}")
    return Release(archive, sha256_file(archive), archive.stat().st_size, opened)


def flash_many(
    release: Release,
    targets: Sequence[Target],
    options: FlashOptions,
    on_event: Event | None = None,
    cancel: threading.Event | None = None,
) -> list[FlashResult]:
    """Flash every target at once (up to options.parallel); results in the order of `targets`.

    Ctrl-C (or setting `cancel`) stops every copy at its next chunk and starts no new install; an install
    already running on a board finishes (it is atomic either way), and partial copies are resumed next time.
    """
    cancel = cancel or threading.Event()
    pool = ThreadPoolExecutor(max_workers=min(options.parallel, len(targets)) or 1)
    try:
        futures = [pool.submit(flash_one, release, t, options, on_event, cancel) for t in targets]
        return [f.result() for f in futures]
    except KeyboardInterrupt:
        cancel.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def survey(release: Release, targets: Sequence[Target], options: FlashOptions) -> list[list[str]]:
    """What each board holds now, read only (for a dry run): its active version, a copy to resume, or why
    it cannot be reached. Boards are asked in parallel."""
    with ThreadPoolExecutor(max_workers=min(options.parallel, len(targets)) or 1) as pool:
        return list(pool.map(lambda t: _survey_one(release, t, options), targets))


def _survey_one(release: Release, target: Target, options: FlashOptions) -> list[str]:
    name, version, total = release.manifest.name, release.manifest.version, release.size
    final = posixpath.join(target.incoming, release.remote_name)
    try:
        with _connect(target, options) as device:
            link = device.readlink(posixpath.join(target.store, "models", name, "current"))
            copied, partial = device.size(final), device.size(final + ".part")
    except EdgeSDKError as exc:
        return [f"board now: {_without_label(exc, target)}"]
    active = posixpath.basename(link) if link else None
    lines = [f"board now: {name} {active} is active" if active else f"board now: no version of {name} is active"]
    if active == version:
        lines.append(f"{version} is already active: the install would change nothing")
    elif active and not options.allow_downgrade and _older(version, active):
        lines.append(f"would be refused: {version} is older than the active {active} (--allow-downgrade)")
    if copied == total:
        lines.append("the bundle is already copied there: nothing would be sent")
    elif partial and partial <= total:
        lines.append(f"a partial copy is there: the copy would resume at byte {partial} of {total}")
    return lines


def _older(version: str, than: str) -> bool:
    from edge_sdk.semver import version_key

    try:
        return version_key(version) < version_key(than)
    except ValueError:  # a hand-made directory name: the device decides
        return False


def _connect(target: Target, options: FlashOptions) -> Transport:
    return open_transport(
        target,
        identity=options.identity,
        known_hosts=options.known_hosts,
        accept_new_host=options.accept_new_host,
        remote_cmd=options.remote_cmd,
    )


def flash_one(
    release: Release,
    target: Target,
    options: FlashOptions,
    on_event: Event | None = None,
    cancel: threading.Event | None = None,
) -> FlashResult:
    """Flash one target; never raises for what a board does, returns a result with the failed stage instead."""
    run = _Run(release, target, options, on_event or (lambda *_: None), cancel or threading.Event())
    try:
        return run.go()
    except EdgeSDKError as exc:
        return run.result(False, _without_label(exc, target))


class _Run:
    """One target's flash, stage by stage, remembering what it did for the result."""

    def __init__(
        self, release: Release, target: Target, options: FlashOptions, on_event: Event, cancel: threading.Event
    ) -> None:
        self.release, self.target, self.options, self.on_event = release, target, options, on_event
        self.cancel = cancel
        self.stage = Stage.PLAN
        self.sent = 0  # bytes sent by this run
        self.on_board = 0  # bytes of the archive on the board (a resumed copy starts above 0)
        self.active: str | None = None
        self.log: list[str] = []

    def result(self, ok: bool, message: str) -> FlashResult:
        stage = Stage.DONE if ok else self.stage
        self.on_event(self.target, stage, self.on_board, self.release.size)
        return FlashResult(self.target, ok, stage, message, self.sent, self.release.size, self.active, tuple(self.log))

    def enter(self, stage: Stage) -> None:
        self.stage = stage
        if stage in (Stage.CONNECT, Stage.UPLOAD, Stage.INSTALL):  # never between activation and health check
            self.stop_if_cancelled()
        self.on_event(self.target, stage, self.on_board, self.release.size)

    def stop_if_cancelled(self) -> None:
        if self.cancel.is_set():
            raise DeviceError("cancelled; nothing was installed, and the next flash resumes the copy")

    def go(self) -> FlashResult:
        manifest, options = self.release.manifest, self.options
        if options.health_url and self.target.scheme is Scheme.DIR:
            raise ConfigError(
                f"{self.target.label} is a mounted store, not a running board: there is no daemon to health-check "
                "(flash cards without --health-url)"
            )
        if self.target.profile:
            fit = fit_reports(self.release.bundle, self.target.profile)
            if not any(report.fits for _, report in fit):
                reasons = "; ".join(f"{vid}: {', '.join(r.reasons)}" for vid, r in fit)
                raise ConfigError(f"no variant of {manifest.name} fits {self.target.profile}: {reasons}")
        self.enter(Stage.CONNECT)
        with _connect(self.target, options) as device:
            self.enter(Stage.UPLOAD)
            remote = self.upload(device)
            self.enter(Stage.INSTALL)
            before = self.active_version(device)
            self.install(device, remote)
            self.active = manifest.version if options.activate else before
            if options.health_url:
                self.enter(Stage.HEALTH)
                problem = self.health(device, options.health_url)
                if problem:
                    return self.result(False, self.roll_back(device, before, problem))
        what = "installed and active" if options.activate else "installed (not activated)"
        return self.result(True, f"{manifest.name} {manifest.version} {what}")

    def upload(self, device: Transport) -> str:
        """Copy the archive into the device's incoming directory, resuming a partial copy of the same bytes."""
        incoming = self.target.incoming
        final = posixpath.join(incoming, self.release.remote_name)
        part = final + ".part"
        total = self.release.size
        device.makedirs(incoming)
        if device.size(final) == total:
            self.log.append("already copied")
            self.on_board = total
            return final
        have = device.size(part) or 0
        if have > total:  # not a prefix of ours: start over
            have = 0
        if have:
            self.log.append(f"resumed at byte {have} of {total}")
        self.on_board = have

        def sent(n: int) -> None:
            self.on_board += n
            self.sent += n
            self.on_event(self.target, Stage.UPLOAD, self.on_board, total)
            self.stop_if_cancelled()

        self.on_event(self.target, Stage.UPLOAD, self.on_board, total)
        device.send(self.release.archive, part, have, sent)
        device.rename(part, final)
        return final

    def install(self, device: Transport, remote: str) -> None:
        """The device's own edge-sdk verifies digests, signature and golden set, then installs atomically."""
        options = self.options
        args = ["install", remote, "--store", self.target.store]
        keys = []
        for i, key in enumerate(options.trust):
            # a name of its own: another flash into this store may be sending its keys at the same time
            on_device = posixpath.join(self.target.incoming, f"trusted-{uuid.uuid4().hex[:12]}-{i}.pub")
            device.send(key, on_device, 0, lambda _n: None)
            keys.append(on_device)
        for key_path in (*keys, *options.device_trust):
            args += ["--trust", key_path]
        if not options.activate:
            args.append("--no-activate")
        if not options.device_check:
            args.append("--no-check")
        if options.allow_downgrade:
            args.append("--allow-downgrade")
        try:
            done = device.run(args, options.install_timeout_s)
        finally:  # also when the install times out: no stray key copies (a dropped link keeps its own error)
            for key_path in keys:
                with contextlib.suppress(DeviceError):
                    device.remove(key_path)
        if done.returncode != 0:
            device.remove(remote)  # refused: the next flash copies afresh instead of trusting these bytes
            raise StoreError(f"the device refused the bundle: {_device_message(done)}")
        device.remove(remote)
        self.log.extend(f"device: {line.strip()}" for line in done.stdout.splitlines() if line.strip())

    def active_version(self, device: Transport) -> str | None:
        link = device.readlink(posixpath.join(self.target.store, "models", self.release.manifest.name, "current"))
        return posixpath.basename(link) if link else None

    def health(self, device: Transport, url: str) -> str | None:
        """None when the URL answers 2xx from the board within the timeout, else what went wrong last."""
        deadline = time.monotonic() + self.options.health_timeout_s
        problem = "no answer"
        while True:
            try:
                status = device.http_status(url, timeout=min(5.0, self.options.health_timeout_s))
                if 200 <= status < 300:
                    return None
                problem = f"HTTP {status}"
            except DeviceError as exc:
                problem = _without_label(exc, self.target)
            except ConfigError as exc:  # the board cannot be asked at all: waiting will not help
                return f"{url} cannot be checked: {exc}"
            if time.monotonic() >= deadline:
                return f"{url} did not answer 2xx within {self.options.health_timeout_s:g} s (last: {problem})"
            time.sleep(0.5)

    def roll_back(self, device: Transport, before: str | None, problem: str) -> str:
        name, version = self.release.manifest.name, self.release.manifest.version
        if before is None or before == version:
            return f"health check failed: {problem}; there is no earlier version to roll back to ({version} stays)"
        done = device.run(["rollback", name, "--store", self.target.store], self.options.install_timeout_s)
        now = self.active_version(device)
        if done.returncode != 0 or now != before:
            self.active = now
            return f"health check failed: {problem}; ROLLBACK FAILED, {now} is active: {_device_message(done)}"
        self.active = before
        self.log.append(f"rolled back to {before}")
        return f"health check failed: {problem}; rolled back to {before}"


def _without_label(exc: EdgeSDKError, target: Target) -> str:
    """The message without the target's name in front: results and plans are shown beside it."""
    return str(exc).removeprefix(f"{target.label}: ")


def _device_message(done: Completed) -> str:
    """The device CLI's `error: ...` message (rich may have wrapped it), else its last output line."""
    lines = done.stderr.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("error:")), None)
    if start is not None:
        return " ".join(line.strip() for line in lines[start:]).removeprefix("error:").strip()
    tail = [line.strip() for line in (done.stderr + "\n" + done.stdout).splitlines() if line.strip()]
    last = tail[-1] if tail else f"exit status {done.returncode}, no output"
    if done.returncode == 127:  # the shell found no such command
        return (
            f"{last} (is edge-sdk installed on the board? pip install 'edge-sdk[onnx]' there, or point "
            "--remote-edge-sdk at it)"
        )
    return last
