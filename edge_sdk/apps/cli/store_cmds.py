"""`edge-sdk install | rollback | models`: verified bundle versions in a device store, switched atomically."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from edge_sdk.apps.cli.common import console, user_errors
from edge_sdk.errors import BackendUnavailableError, StoreError

if TYPE_CHECKING:
    from edge_sdk.bundle import Bundle
    from edge_sdk.store import InstalledModel

STORE_OPT = typer.Option(
    Path("/var/lib/edge-sdk"),
    "--store",
    envvar="EDGE_SDK_STORE",
    help="The store directory (created if missing).",
)


def install_cmd(
    bundle: Path = typer.Argument(..., help="A bundle directory or .edgebundle file."),
    store: Path = STORE_OPT,
    no_activate: bool = typer.Option(False, "--no-activate", help="Install the version but keep the active one."),
    no_check: bool = typer.Option(
        False, "--no-check", help="Skip re-running every variant's golden set on this machine (digests still checked)."
    ),
    allow_downgrade: bool = typer.Option(
        False, "--allow-downgrade", help="Accept a version older than the active one."
    ),
    trust: list[Path] = typer.Option(
        [], "--trust", help="Public key (PEM) the bundle must be signed by; repeatable. Unsigned bundles are refused."
    ),
    allow_failed: bool = typer.Option(
        False, "--allow-failed", help="Install even if a variant failed its accuracy gate at conversion."
    ),
    variant: str | None = typer.Option(
        None, "--variant", help="The variant the daemon serves of this version (default: the best for the device)."
    ),
) -> None:
    """Verify a bundle, check its golden set here, install it as a new version and activate it atomically."""
    from edge_sdk.bundle.signing import load_trusted
    from edge_sdk.store import BundleStore

    with user_errors():
        keys = [load_trusted(p) for p in trust] if trust else None
        opened = BundleStore(store)
        check = _announce if no_check else (_golden_check_allowing_failed if allow_failed else _golden_check)
        with console.status(f"installing {bundle}"):
            model = opened.install(
                bundle, activate=not no_activate, check=check, allow_downgrade=allow_downgrade, trust=keys,
                variant=variant,
            )  # fmt: skip
    console.print(f"[green]installed[/] {_describe(model)}", highlight=False)
    if variant is not None:
        console.print(f"the daemon serves its variant {variant} (chosen with --variant)", highlight=False)


def rollback_cmd(
    name: str = typer.Argument(..., help="The installed model to roll back."),
    store: Path = STORE_OPT,
) -> None:
    """Make the previously active version of a model active again (run twice to roll forward)."""
    from edge_sdk.store import BundleStore

    with user_errors():
        model = BundleStore(store).rollback(name)
    console.print(f"[green]rolled back[/] {_describe(model)}", highlight=False)


def models_cmd(store: Path = STORE_OPT) -> None:
    """List the models installed in a store: active, previous and every installed version."""
    from edge_sdk.store import BundleStore

    with user_errors():
        models = BundleStore(store).list()
    if not models:
        typer.echo(f"no models installed in {store}")  # plain text: no need to start rich for it
        return
    from rich.table import Table

    table = Table(title=f"models in {store}")
    for column in ("model", "active", "previous", "versions"):
        table.add_column(column)
    for m in models:
        table.add_row(m.name, m.active or "[dim]none[/]", m.previous or "", ", ".join(m.versions))
    console.print(table)


def _describe(model: InstalledModel) -> str:
    previous = f", previous {model.previous}" if model.previous else ""
    return f"{model.name}: active {model.active or 'none'}{previous} (installed: {', '.join(model.versions)})"


def _announce(bundle: Bundle) -> bool:
    console.print(f"[green]ok[/] {bundle.name} {bundle.manifest.version}: every file matches its digest")
    return True


def _golden_check_allowing_failed(bundle: Bundle) -> bool:
    return _golden_check(bundle, allow_failed=True)


def _golden_check(bundle: Bundle, *, allow_failed: bool = False) -> bool:
    """Every variant must have passed its gate at conversion and reproduce its golden outputs here."""
    from edge_sdk.apps.cli.golden import check_golden_sets

    _announce(bundle)
    try:
        return check_golden_sets(bundle, allow_failed=allow_failed)
    except BackendUnavailableError as exc:
        # a hint, not a silent skip: an unchecked variant could fail only when the daemon loads it
        raise StoreError(f"cannot check {bundle.name!r} here: {exc}; or install with --no-check") from None
