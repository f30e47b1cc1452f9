"""`edge-sdk cloud serve` refuses bad settings with a message naming them, before it binds a port."""

from __future__ import annotations

from typer.testing import CliRunner

from edge_sdk.apps.cli.main import app


def test_cloud_serve_refusals(key_files, tmp_path):
    runner = CliRunner()
    base = ["cloud", "serve", "--registry", str(tmp_path / "registry"), "--port", "1"]
    devices = ["--device-keys", str(key_files["devices"])]

    tiny = runner.invoke(app, [*base, *devices, "--context", "8"])
    assert tiny.exit_code == 1 and "invalid daemon settings: context" in tiny.output
    missing = runner.invoke(app, [*base, "--device-keys", str(tmp_path / "nope.txt")])
    assert missing.exit_code == 1 and "device key file" in missing.output and "does not exist" in missing.output
    both = runner.invoke(app, [*base, *devices, str(tmp_path), "--store", str(tmp_path / "store")])
    assert both.exit_code == 1 and "give bundle paths or --store DIR, not both" in both.output
    bad_upstream = runner.invoke(app, [*base, *devices, "--upstream", "ftp://cloud"])
    assert bad_upstream.exit_code == 1 and "--upstream must be the http:// or https:// URL" in bad_upstream.output
    (tmp_path / "file").write_text("")
    unusable = runner.invoke(app, ["cloud", "serve", *devices, "--registry", str(tmp_path / "file"), "--port", "1"])
    assert unusable.exit_code == 1 and "cannot use" in unusable.output and "as a registry" in unusable.output
