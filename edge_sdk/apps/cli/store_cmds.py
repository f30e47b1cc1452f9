"""`edge-sdk install | activate | rollback | models [rm | gc]`: verified bundle versions in a device store,
switched atomically."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from edge_sdk.apps.cli.common import console, human_bytes, json_option, print_json, user_errors
from edge_sdk.errors import BackendUnavailableError, StoreError
from edge_sdk.store import BundleStore, InstalledModel  # the store reads directories and links: no bundle models

if TYPE_CHECKING:
    from edge_sdk.bundle import Bundle

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
    with user_errors():
        model = BundleStore(store).rollback(name)
    console.print(f"[green]rolled back[/] {_describe(model)}", highlight=False)


models_app = typer.Typer(
    help="List the models installed in a store; remove a model or a version; remove old versions.",
    invoke_without_command=True,
)


@models_app.callback()
def models_cmd(ctx: typer.Context, store: Path = STORE_OPT, as_json: bool = json_option()) -> None:
    """List the models installed in a store: active, previous and every installed version.
    `models rm` and `models gc` remove models and versions."""
    ctx.obj = store
    if ctx.invoked_subcommand is not None:
        return
    with user_errors():
        models = BundleStore(store).list()
    if as_json:
        print_json({"store": str(store), "models": [_model_json(m) for m in models]})
        return
    if not models:
        typer.echo(f"no models installed in {store}")  # plain text: no need to start rich for it
        return
    from rich import box
    from rich.table import Table

    from edge_sdk.apps.cli.tables import add_id_column

    table = Table(title=f"models in {store}", box=box.SIMPLE_HEAVY, pad_edge=False)
    add_id_column(table, "model", (m.name for m in models))
    for column in ("active", "previous", "versions"):
        table.add_column(column, overflow="fold")
    for m in models:
        table.add_row(m.name, m.active or "[dim]none[/]", m.previous or "", ", ".join(m.versions))
    console.print(table)


def _store(ctx: typer.Context, store: Path) -> Path:
    """A subcommand's --store, else the one given before it (`models --store S rm ...`)."""
    own = ctx.get_parameter_source("store")
    given_before = ctx.obj is not None and own is not None and own.name == "DEFAULT"
    return Path(ctx.obj) if given_before else store


@models_app.command("rm")
def rm_cmd(
    ctx: typer.Context,
    target: str = typer.Argument(..., metavar="NAME[@VERSION]", help="A model (every version) or one version."),
    store: Path = STORE_OPT,
) -> None:
    """Remove a model with all its versions, or one version of it. The active version cannot be removed alone:
    activate another first (or remove the whole model). A daemon serving the store answers 404 for a removed
    model from its next request."""
    name, at, version = target.partition("@")
    with user_errors():
        if at and not version:
            raise StoreError(f"{target!r} names no version: give NAME@VERSION, or NAME to remove every version")
        opened = BundleStore(_store(ctx, store))
        if version:
            freed = opened.size_bytes(name, version)
            left = opened.remove(name, version)
            console.print(f"[green]removed[/] {name} {version} ({human_bytes(freed)})", highlight=False)
            if left is not None:
                console.print(_describe(left), highlight=False)
        else:
            versions = opened.remove_model(name)
            console.print(f"[green]removed[/] {name} (versions {', '.join(versions)})", highlight=False)


@models_app.command("gc")
def gc_cmd(
    ctx: typer.Context,
    keep: int = typer.Option(..., "--keep", min=0, help="Versions to keep per model, newest first."),
    store: Path = STORE_OPT,
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be removed; remove nothing."),
) -> None:
    """Remove old versions: all but each model's --keep newest. The active and previous versions are always
    kept (so `rollback` still works)."""
    with user_errors():
        opened = BundleStore(_store(ctx, store))
        found = opened.collectable(keep)
        sizes = {item: opened.size_bytes(*item) for item in found}
        removed = found if dry_run else opened.gc(keep)
    verb = "would remove" if dry_run else "removed"
    for name, version in removed:
        console.print(f"{verb} {name} {version} ({human_bytes(sizes[(name, version)])})", highlight=False)
    total = sum(sizes.get(item, 0) for item in removed)
    console.print(f"{verb} {len(removed)} version(s), {human_bytes(total)}; kept active and previous", highlight=False)


def activate_cmd(
    name: str = typer.Argument(..., help="The installed model."),
    version: str = typer.Argument(..., help="The installed version to serve."),
    store: Path = STORE_OPT,
) -> None:
    """Make an installed version the active one (verified again first); the old one becomes previous. A daemon
    serving the store serves it from the next request; requests in flight finish on the old one."""
    with user_errors():
        model = BundleStore(store).activate(name, version)
    console.print(f"[green]activated[/] {_describe(model)}", highlight=False)


def _model_json(m: InstalledModel) -> dict[str, object]:
    return {"name": m.name, "active": m.active, "previous": m.previous, "versions": list(m.versions)}


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
