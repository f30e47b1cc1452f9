"""Ed25519 signatures over a bundle's canonical manifest (which holds every file's digest).

`manifest.sig` beside `manifest.json`: {"algorithm": "ed25519", "key_id": ..., "signature": base64}.
A device that trusts keys refuses an unsigned bundle, one signed by another key, and one whose manifest
changed after signing; each refusal says which.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_sdk.bundle import safejson
from edge_sdk.bundle.manifest import Manifest
from edge_sdk.errors import BackendUnavailableError, BundleError, ConfigError

SIGNATURE_NAME = "manifest.sig"
ALGORITHM = "ed25519"
SIGNATURE_BYTES = 64
MAX_SIGNATURE_BYTES = 4096  # the real file is ~150 bytes
_FIELDS = '{"algorithm": "ed25519", "key_id": <16 hex digits>, "signature": <base64>}'
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ModuleNotFoundError as exc:  # pragma: no cover - a core dependency, but stay clear if missing
        raise BackendUnavailableError("bundle signatures need 'cryptography': pip install edge-sdk") from exc
    return serialization, ed25519


@dataclass(frozen=True)
class TrustedKey:
    key_id: str
    raw: bytes  # 32-byte Ed25519 public key
    source: str  # where it came from, for messages


def key_id(raw_public: bytes) -> str:
    return hashlib.sha256(raw_public).hexdigest()[:16]


def generate_keypair(private_path: Path) -> tuple[Path, str]:
    """Write a new private key (PEM, mode 0600) and `<name>.pub`; return the public key path and key id."""
    serialization, ed25519 = _crypto()
    if private_path.exists():
        raise ConfigError(f"{str(private_path)!r} already exists; refusing to overwrite a key")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public = key.public_key()
    pub_path = private_path.with_name(private_path.name + ".pub")
    pub_path.write_bytes(
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return pub_path, key_id(raw)


def load_trusted(path: str | Path) -> TrustedKey:
    serialization, ed25519 = _crypto()
    path = Path(path)
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{str(path)!r} is not a PEM public key: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ConfigError(f"{str(path)!r} is a {type(key).__name__}; bundles are signed with Ed25519 keys")
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return TrustedKey(key_id(raw), raw, str(path))


def sign_manifest(manifest: Manifest, private_key: str | Path) -> dict[str, str]:
    serialization, ed25519 = _crypto()
    try:
        key = serialization.load_pem_private_key(Path(private_key).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"{str(private_key)!r} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"{str(private_key)!r} is not an Ed25519 key")
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    signature = key.sign(manifest.canonical_bytes())
    return {"algorithm": ALGORITHM, "key_id": key_id(raw), "signature": base64.b64encode(signature).decode()}


def write_signature(bundle_root: Path, manifest: Manifest, private_key: str | Path) -> str:
    sig = sign_manifest(manifest, private_key)
    tmp = bundle_root / (SIGNATURE_NAME + ".tmp")
    tmp.write_text(json.dumps(sig, indent=2))
    tmp.replace(bundle_root / SIGNATURE_NAME)
    return sig["key_id"]


@dataclass(frozen=True)
class SignatureFile:
    algorithm: str
    key_id: str
    signature: bytes  # 64 raw bytes


def parse_signature(raw: bytes) -> SignatureFile:
    """The fields of a `manifest.sig`, or a BundleError naming the one that is wrong."""
    data = safejson.loads(raw, what=SIGNATURE_NAME, max_bytes=MAX_SIGNATURE_BYTES, max_depth=1)
    if not isinstance(data, dict):
        raise BundleError(f"{SIGNATURE_NAME} is malformed: it must hold a JSON object with {_FIELDS}")
    missing = [f for f in ("algorithm", "key_id", "signature") if not isinstance(data.get(f), str)]
    if missing:
        raise BundleError(f"{SIGNATURE_NAME} is malformed: {missing} missing or not strings; it holds {_FIELDS}")
    if data["algorithm"] != ALGORITHM:
        raise BundleError(f"{SIGNATURE_NAME} uses {data['algorithm'][:40]!r}; only {ALGORITHM!r} is accepted")
    if not _KEY_ID.match(data["key_id"]):
        raise BundleError(f"{SIGNATURE_NAME} has key_id {data['key_id'][:40]!r}; a key id is 16 hex digits")
    try:
        signature = base64.b64decode(data["signature"], validate=True)
    except ValueError as exc:  # binascii.Error
        raise BundleError(f"{SIGNATURE_NAME} is malformed: signature is not base64 ({exc})") from None
    if len(signature) != SIGNATURE_BYTES:
        raise BundleError(
            f"{SIGNATURE_NAME} is malformed: the signature is {len(signature)} bytes, an Ed25519 one {SIGNATURE_BYTES}"
        )
    return SignatureFile(data["algorithm"], data["key_id"], signature)


def read_signature(path: Path) -> SignatureFile:
    """`parse_signature` of a file, reading no more than the limit whatever its size."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_SIGNATURE_BYTES + 1)
    except OSError as exc:
        raise BundleError(f"{SIGNATURE_NAME} cannot be read: {exc}") from None
    return parse_signature(raw)


def check_signature(bundle_root: Path, manifest: Manifest, trusted: list[TrustedKey]) -> str:
    """The id of the trusted key that signed this manifest, or a BundleError saying what is wrong."""
    _, ed25519 = _crypto()
    from cryptography.exceptions import InvalidSignature

    ids = ", ".join(k.key_id for k in trusted)
    path = bundle_root / SIGNATURE_NAME
    if not path.is_file() or path.is_symlink():
        raise BundleError(
            f"bundle {manifest.name!r} is not signed; this device accepts only bundles signed by a trusted key ({ids})"
        )
    sig = read_signature(path)
    key = next((k for k in trusted if k.key_id == sig.key_id), None)
    if key is None:
        raise BundleError(
            f"bundle {manifest.name!r} is signed by key {sig.key_id}, which is not trusted here (trusted: {ids})"
        )
    signer = sig.key_id
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(key.raw).verify(sig.signature, manifest.canonical_bytes())
    except InvalidSignature:
        raise BundleError(
            f"the signature of bundle {manifest.name!r} does not match its manifest: the manifest "
            f"changed after it was signed by key {signer}"
        ) from None
    return signer
