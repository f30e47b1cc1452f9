"""`edge-sdk keys generate` and `edge-sdk bundle sign | verify`: Ed25519 signatures over bundles."""

from __future__ import annotations

from pathlib import Path

import typer

from edge_sdk.apps.cli.common import console, user_errors

keys_app = typer.Typer(help="Signing keys for bundles.", no_args_is_help=True)
bundle_app = typer.Typer(help="Sign bundles and verify their signatures.", no_args_is_help=True)

TRUST_OPT = typer.Option(
    [], "--trust", help="Public key (PEM) a signature must come from; repeatable. Unsigned bundles are refused."
)


@keys_app.command("generate")
def generate_cmd(
    output: Path = typer.Option(..., "--output", "-o", help="Private key file to write (PEM, mode 0600)."),
) -> None:
    """Generate an Ed25519 key pair: OUTPUT (keep it secret) and OUTPUT.pub (copy it to devices)."""
    from edge_sdk.bundle.signing import generate_keypair

    with user_errors():
        pub, kid = generate_keypair(output)
    console.print(f"[green]wrote[/] {output} (private) and {pub} (public); key id {kid}")


@bundle_app.command("sign")
def sign_cmd(
    bundle: Path = typer.Argument(..., help="A bundle directory or .edgebundle file."),
    key: Path = typer.Option(..., "--key", "-k", help="Private key from `edge-sdk keys generate`."),
) -> None:
    """Sign a bundle's manifest (and through it every file's digest); writes manifest.sig into the bundle."""
    import shutil
    import tempfile

    from edge_sdk.bundle import Bundle
    from edge_sdk.bundle.signing import write_signature

    with user_errors():
        opened = Bundle.open(bundle)  # never sign what does not verify
        kid = write_signature(opened.root, opened.manifest, key)
        if bundle.is_file():  # re-pack the archive with its signature, atomically
            tmp = Path(tempfile.mkdtemp(dir=bundle.parent)) / bundle.name
            opened.pack(tmp)
            tmp.replace(bundle)
            shutil.rmtree(tmp.parent, ignore_errors=True)
    console.print(f"[green]signed[/] {bundle} with key {kid}")


@bundle_app.command("verify")
def verify_signed_cmd(
    bundle: Path = typer.Argument(..., help="A bundle directory or .edgebundle file."),
    trust: list[Path] = TRUST_OPT,
) -> None:
    """Verify a bundle and that it is signed by one of the trusted keys. Exits 1 when not."""
    from edge_sdk.bundle import Bundle
    from edge_sdk.bundle.signing import load_trusted
    from edge_sdk.errors import ConfigError

    with user_errors():
        if not trust:
            raise ConfigError("name at least one trusted public key with --trust KEY.pub")
        keys = [load_trusted(p) for p in trust]
        opened = Bundle.open(bundle, trust=keys)
    console.print(f"[green]ok[/] {opened.name} {opened.manifest.version}: digests match and the signature is trusted")
