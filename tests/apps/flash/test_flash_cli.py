"""`edge-sdk flash` from the command line: targets files, the dry-run plan with its fit check, the summary."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge_sdk.apps.flash import Scheme, Stage, flash_one, parse_target, prepare, read_targets
from edge_sdk.bundle import Bundle
from edge_sdk.errors import ConfigError
from edge_sdk.store import BundleStore

runner = CliRunner()


def _cli(*args: str):
    from edge_sdk.apps.cli.main import app

    return runner.invoke(app, ["flash", *args])


@pytest.fixture(scope="module")
def tiny_profile(tmp_path_factory) -> Path:
    """A board with 16 MB for models: nothing with an engine fits there."""
    text = (Path(__file__).parents[3] / "device_profiles" / "data" / "rpi4.yaml").read_text()
    path = tmp_path_factory.mktemp("profiles") / "tiny-board.yaml"
    path.write_text(text.replace("id: rpi4", "id: tiny-board").replace("budget_mb: 2816", "budget_mb: 16"))
    return path


def test_target_urls_parse_and_bad_ones_say_what_is_valid(tmp_path):
    pi = parse_target("ssh://pi@10.0.0.7:2222/var/lib/edge-sdk/", "rpi5")
    assert (pi.scheme, pi.user, pi.host, pi.port, pi.store, pi.profile) == (
        Scheme.SSH,
        "pi",
        "10.0.0.7",
        2222,
        "/var/lib/edge-sdk",
        "rpi5",
    )
    assert pi.label == "ssh://pi@10.0.0.7:2222/var/lib/edge-sdk"
    assert parse_target("dir:///media/sd/store").store == "/media/sd/store"
    for bad, why in [
        ("scp://pi@h/x", "scheme 'scp'; valid: 'ssh', 'dir'"),
        ("ssh://pi@host", "names no absolute store path"),
        ("dir://media/sd", "a dir:// target has no host"),
        ("ssh://pi:secret@host/x", "holds a password"),
        ("ssh://pi@host:99999/x", "invalid port"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(why)):
            parse_target(bad)

    listing = tmp_path / "boards.txt"
    listing.write_text("# the lab\nssh://pi@pi-1/var/lib/edge-sdk rpi5\n\ndir:///media/sd  # a card\n")
    assert [(t.label, t.profile) for t in read_targets(listing)] == [
        ("ssh://pi@pi-1/var/lib/edge-sdk", "rpi5"),
        ("dir:///media/sd", None),
    ]
    listing.write_text("ssh://pi@pi-1/store rpi5\nftp://x/y\n")
    with pytest.raises(ConfigError, match=r"boards\.txt:2: target 'ftp://x/y' has scheme 'ftp'"):
        read_targets(listing)


@pytest.mark.slow
def test_dir_target_resumes_a_partial_copy(releases, tmp_path):
    release = prepare(releases["1.0.0"], tmp_path)
    store = tmp_path / "card" / "store"
    part = store / ".incoming" / f"{release.remote_name}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(release.archive.read_bytes()[:100_000])  # a copy the user pulled the card out of
    result = flash_one(release, parse_target(f"dir://{store}"), _no_ssh_options(activate=True))
    assert result.ok, result.message
    assert result.sent_bytes == release.size - 100_000
    assert BundleStore(store).active("digits-cnn").manifest == release.manifest

    # an .edgebundle is sent as it is; packing is reproducible, so it is the same bytes and the same copy name
    packed = prepare(Bundle.open(releases["1.0.0"]).pack(tmp_path / "digits.edgebundle"), tmp_path)
    assert packed.archive == tmp_path / "digits.edgebundle"
    assert (packed.sha256, packed.remote_name) == (release.sha256, release.remote_name)


@pytest.mark.slow
def test_an_install_that_times_out_leaves_no_key_copies_on_the_board(releases, signing_keys, tmp_path):
    release = prepare(releases["1.0.0"], tmp_path)
    store = tmp_path / "card"
    options = _no_ssh_options(activate=True, trust=(signing_keys["pub"],), install_timeout_s=0.05)
    result = flash_one(release, parse_target(f"dir://{store}"), options)
    assert not result.ok and result.stage is Stage.INSTALL and "took over" in result.message
    assert sorted(p.name for p in (store / ".incoming").iterdir()) == [release.remote_name]  # kept: resumable
    assert BundleStore(store).list() == []


@pytest.mark.slow
def test_no_variant_fitting_the_boards_profile_stops_before_connecting(releases, tiny_profile, tmp_path):
    release = prepare(releases["1.0.0"], tmp_path)
    target = parse_target(f"dir://{tmp_path / 'store'}", str(tiny_profile))
    result = flash_one(release, target, _no_ssh_options(activate=True))
    assert not result.ok and result.stage is Stage.PLAN
    assert "no variant of digits-cnn fits" in result.message and "budget 16.0 MiB" in result.message
    assert not (tmp_path / "store").exists()

    card = parse_target(f"dir://{tmp_path / 'card'}")
    checked = flash_one(release, card, _no_ssh_options(activate=True, health_url="http://127.0.0.1:8080/health/ready"))
    assert not checked.ok and "there is no daemon to health-check" in checked.message
    assert not (tmp_path / "card").exists()  # refused before anything was written


@pytest.mark.slow
def test_dry_run_prints_the_plan_the_fit_and_the_boards_state_and_changes_nothing(
    sshd, releases, tiny_profile, tmp_path, unused_port
):
    store, card = tmp_path / "pi", tmp_path / "card"
    BundleStore(store).install(releases["1.1.0"])
    release = prepare(releases["1.0.0"], tmp_path)  # the same bytes the command packs: packing is reproducible
    part = store / ".incoming" / f"{release.remote_name}.part"
    part.parent.mkdir()
    part.write_bytes(release.archive.read_bytes()[:1000])
    listing = tmp_path / "boards.txt"
    listing.write_text(
        f"{sshd.url(store)} rpi5\ndir://{card} {tiny_profile}\nssh://{sshd.user}@127.0.0.1:{unused_port}/gone\n"
    )
    out = _cli(
        str(releases["1.0.0"]),
        "--targets",
        str(listing),
        "--activate",
        "--dry-run",
        "--identity",
        str(sshd.identity),
        "--known-hosts",
        str(sshd.known_hosts),
    )
    assert out.exit_code == 0, out.output
    text = out.output
    assert "digits-cnn 1.0.0: 4 variant(s)" in text
    assert f"{sshd.url(store)} (profile rpi5)" in text
    assert f"install digits-cnn 1.0.0 into the store {store}" in text
    assert "board now: digits-cnn 1.1.0 is active" in text
    assert "would be refused: 1.0.0 is older than the active 1.1.0" in text
    assert f"the copy would resume at byte 1000 of {release.size}" in text
    assert "fit onnx-int8-static: fits" in text
    assert "board now: no version of digits-cnn is active" in text  # the card, where nothing is yet
    assert "does not fit" in text and "would be skipped: no variant fits" in text
    assert "board now: unreachable: Unable to connect to port" in text
    assert "dry run: nothing was copied or changed" in text
    assert part.stat().st_size == 1000 and BundleStore(store).active("digits-cnn").manifest.version == "1.1.0"
    assert not card.exists()


@pytest.mark.slow
def test_flash_command_flashes_several_boards_and_summarises(sshd, releases, signing_keys, tmp_path, unused_port):
    listing = tmp_path / "boards.txt"
    good, card = tmp_path / "pi" / "store", tmp_path / "card"
    listing.write_text(f"{sshd.url(good)} rpi5\nssh://{sshd.user}@127.0.0.1:{unused_port}/gone\ndir://{card}\n")
    common = ["--identity", str(sshd.identity), "--known-hosts", str(sshd.known_hosts)]
    out = _cli(
        str(releases["1.1.0"]),
        "--targets",
        str(listing),
        "--activate",
        "--trust",
        str(signing_keys["pub"]),
        "--remote-edge-sdk",
        sshd.remote_cmd,
        "--no-device-check",
        *common,
    )
    assert out.exit_code == 1, out.output  # one board failed
    assert "flash summary" in out.output
    assert "2 of 3 board(s) flashed, 1 failed" in out.output
    assert re.search(r"127\.0\.0\.1:\d+/gone.*failed.*connect.*unreachable", out.output), out.output
    for store in (good, card):
        assert BundleStore(store).active("digits-cnn").manifest.version == "1.1.0"

    bad = _cli(str(releases["1.1.0"]), "--to", "ftp://x/y")
    assert bad.exit_code == 1 and "valid: 'ssh', 'dir'" in bad.output
    none = _cli(str(releases["1.1.0"]))
    assert none.exit_code == 1 and "name at least one board" in none.output
    twice = _cli(str(releases["1.1.0"]), "--to", f"dir://{card}", "--to", f"dir://{card}/")
    assert twice.exit_code == 1 and "targets named more than once" in twice.output
    typo = _cli(str(releases["1.1.0"]), "--to", f"dir://{card}", "--activate", "--health-url", "127.0.0.1:8080/health")
    assert typo.exit_code == 1 and "must be http://HOST[:PORT]/PATH" in typo.output


def _no_ssh_options(**changes: object):
    from edge_sdk.apps.flash import FlashOptions

    return FlashOptions(device_check=False, **changes)  # type: ignore[arg-type]
