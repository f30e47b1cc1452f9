"""One configuration for `serve` and `cloud serve`: flags generated from the config models (defaults written once),
a TOML `--config` file named as the flags, EDGE_SDK_* variables; flags > environment > file > default."""

from __future__ import annotations

import re
import tomllib

import pytest
import typer
from typer.testing import CliRunner

from edge_sdk.apps.cli.cloud_serve_options import CLOUD_SERVE
from edge_sdk.apps.cli.main import app
from edge_sdk.apps.cli.serve_options import SERVE
from edge_sdk.apps.daemon.config import DaemonConfig
from edge_sdk.apps.gateway.config import GatewayConfig

CLEAN_ENV = {k: None for k in ("EDGE_SDK_STORE", "EDGE_SDK_HOST", "EDGE_SDK_PORT", "EDGE_SDK_CONFIG",
                               "EDGE_SDK_API_KEY_FILE", "EDGE_SDK_CLOUD_KEY_FILE")}  # fmt: skip


def invoke(*args: str, env: dict[str, str | None] | None = None):
    return CliRunner().invoke(app, list(args), env={**CLEAN_ENV, **(env or {})})


def _command(*path: str):
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    return command


@pytest.mark.parametrize(("path", "table", "model"), [(("serve",), SERVE, DaemonConfig),
                                                      (("cloud", "serve"), CLOUD_SERVE, GatewayConfig)])  # fmt: skip
def test_help_defaults_are_the_config_models(path, table, model):
    """Each flag's default, turned into the model's field as a given value would be, is the field's default."""
    params = {p.name: p for p in _command(*path).params}
    checked = 0
    for row in table.rows:
        if row.field is None or row.to_field is not None:
            continue  # not a field, or a file whose contents are the field (key files: no file, no keys)
        flag_default = params[row.name].default
        if model.model_fields.get(row.field) is not None and model.model_fields[row.field].is_required():
            assert params[row.name].required, f"{row.flag}: the model requires it; the flag does not"
            continue
        settings = table.settings({row.name: flag_default})
        *parents, leaf = row.field.split(".")
        for part in parents:
            settings = settings[part]
        expected = model.model_fields[row.field.split(".")[0]].get_default(call_default_factory=True)
        for part in row.field.split(".")[1:]:
            expected = getattr(expected, part)
        assert settings[leaf] == expected, f"{row.flag}: flag default {flag_default!r}, model default {expected!r}"
        checked += 1
    assert checked >= (25 if model is DaemonConfig else 9)


def test_serve_help_shows_the_model_defaults():
    out = re.sub(r"\s+", " ", invoke("serve", "--help").output)
    d = DaemonConfig()
    assert f"--port INTEGER Port to bind. [env var: EDGE_SDK_PORT] [default: {d.port}]" in out
    assert f"[default: {d.max_body_bytes / 1024 / 1024}]" in out  # --max-body-mb, in MiB
    assert f"[default: {d.queue_ttl_s}]" in out and "--config" in out and "EDGE_SDK_STORE" in out


def test_a_default_changed_in_the_model_changes_the_flag(monkeypatch):
    """No default is restated in the CLI: the table reads the model."""
    from edge_sdk.apps.cli.options import OptionTable

    class Tuned(DaemonConfig):
        concurrency_per_model: int = 7

    table = OptionTable(Tuned, [r for r in SERVE.rows if r.name == "concurrency"])
    assert table.default(table.rows[0]) == 7


def _resolved(*args: str, env: dict[str, str | None] | None = None) -> dict:
    result = invoke("serve", *args, "--print-config", env=env)
    assert result.exit_code == 0, result.output
    return tomllib.loads(result.output)


def test_config_file_then_environment_then_flags(tmp_path):
    config = tmp_path / "daemon.toml"
    config.write_text('port = 9001\nhost = "0.0.0.0"\nmax-body-mb = 16\nprivacy = ["notes"]\nstore = "store"\n')
    from_file = _resolved("--config", str(config))
    assert (from_file["port"], from_file["host"], from_file["max-body-mb"]) == (9001, "0.0.0.0", 16)
    assert from_file["privacy"] == ["notes"]
    assert from_file["store"] == str(tmp_path / "store"), "a relative path is taken from the file's directory"
    assert from_file["concurrency"] == DaemonConfig().concurrency_per_model  # not in the file: the model's
    from_env = _resolved("--config", str(config), env={"EDGE_SDK_PORT": "9002", "EDGE_SDK_STORE": "/srv/s"})
    assert (from_env["port"], from_env["host"], from_env["store"]) == (9002, "0.0.0.0", "/srv/s")
    from_flag = _resolved("--config", str(config), "--port", "9003", env={"EDGE_SDK_PORT": "9002"})
    assert from_flag["port"] == 9003
    by_env_var = _resolved(env={"EDGE_SDK_CONFIG": str(config)})
    assert by_env_var["port"] == 9001


def test_the_settings_reach_the_daemon_config(tmp_path):
    from edge_sdk.apps.cli.serve_cmds import daemon_settings

    keys = tmp_path / "keys.txt"
    keys.write_text("k1\nk2\n")
    given = {row.name: SERVE.default(row) for row in SERVE.rows}
    given.update(store=tmp_path / "store", port=9100, max_body_mb=1.5, api_key_file=keys, privacy=["a"])
    _, config = daemon_settings([], given)
    assert (config.port, config.max_body_bytes, config.api_keys) == (9100, int(1.5 * 1024 * 1024), {"k1", "k2"})
    assert config.local_only_models == {"a"} and config.queue_path == tmp_path / "store" / "queue.sqlite"
    assert config.request_timeout_s == DaemonConfig().request_timeout_s


def test_config_file_mistakes_are_one_line_errors(tmp_path):
    bad_key = tmp_path / "a.toml"
    bad_key.write_text("prot = 9001\n")
    result = invoke("serve", "--config", str(bad_key), "--print-config")
    assert result.exit_code == 2 and "unknown option 'prot'" in result.output and "'port'" in result.output
    bad_toml = tmp_path / "b.toml"
    bad_toml.write_text("port = \n")
    assert "is not valid TOML" in invoke("serve", "--config", str(bad_toml)).output
    bad_value = tmp_path / "c.toml"
    bad_value.write_text('port = "eighty"\n')
    wrong = re.sub(r"[\s│]+", " ", invoke("serve", "--config", str(bad_value), "--print-config").output)
    assert f"config file '{bad_value}': port: Input should be a valid integer" in wrong
    missing = invoke("serve", "--config", str(tmp_path / "none.toml"))
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_serve_honours_edge_sdk_store(tmp_path):
    """EDGE_SDK_STORE is the store `serve` serves (as install/models/rollback use it); bundle paths given on the
    command line win over it."""
    from edge_sdk.apps.cli.serve_cmds import daemon_settings

    given = {row.name: SERVE.default(row) for row in SERVE.rows}
    empty = tmp_path / "store"
    out = _resolved(env={"EDGE_SDK_STORE": str(empty)})
    assert out["store"] == str(empty)
    given["store"] = empty
    source, _ = daemon_settings([], given)
    assert source.names() == []


def test_cloud_serve_reads_the_same_kind_of_file(tmp_path):
    config = tmp_path / "gateway.toml"
    config.write_text('device-keys = "devices.txt"\nregistry = "/srv/registry"\ncontext = 8192\n')
    result = invoke("cloud", "serve", "--config", str(config), "--print-config")
    assert result.exit_code == 0, result.output
    out = tomllib.loads(result.output)
    assert out["device-keys"] == str(tmp_path / "devices.txt") and out["context"] == 8192
    assert out["port"] == GatewayConfig.model_fields["daemon"].default.port == 8090
    required = invoke("cloud", "serve", "--print-config")
    assert required.exit_code == 2 and "--device-keys" in required.output


def test_daemon_config_is_a_file_serve_reads(tmp_path):
    result = invoke("daemon", "config", "--store", str(tmp_path / "s"))
    assert result.exit_code == 0
    path = tmp_path / "daemon.toml"
    path.write_text(result.output)
    assert tomllib.loads(result.output) == {"store": str(tmp_path / "s")}  # every default commented out
    for row in SERVE.rows:
        assert f"# {row.key} = " in result.output
    assert _resolved("--config", str(path))["store"] == str(tmp_path / "s")


def test_daemon_unit_reads_the_config_file_and_says_how_to_make_its_user(tmp_path):
    config = tmp_path / "daemon.toml"
    config.write_text(f'store = "{tmp_path / "store"}"\ndrain-timeout = 15\nqueue-path = "/data/q/queue.sqlite"\n')
    result = CliRunner().invoke(app, ["daemon", "unit", "--config", str(config)])
    assert result.exit_code == 0, result.output
    exec_start = next(line for line in result.stdout.splitlines() if line.startswith("ExecStart="))
    assert exec_start.endswith(f"serve --config {config}"), "the store comes from the file"
    assert "TimeoutStopSec=25" in result.stdout and "User=edge-sdk" in result.stdout
    assert f"ReadWritePaths=/data/q {tmp_path / 'store'}" in result.stdout
    assert "useradd --system" in result.stderr and "edge-sdk" in result.stderr
    without = CliRunner().invoke(app, ["daemon", "unit", "--config", str(tmp_path / "new.toml")])
    assert "serve --config" in without.stdout and "--store /var/lib/edge-sdk" in without.stdout
    assert "edge-sdk daemon config" in without.stderr  # how to write the file it reads


def test_serve_from_a_config_file_answers_on_its_port(onnx_bundle, tmp_path):
    """The real thing: a daemon process started with only --config."""
    import subprocess
    import sys
    import time

    import httpx

    from edge_sdk.store import BundleStore

    BundleStore(tmp_path / "store").install(onnx_bundle.root)
    port = _free_port()
    config = tmp_path / "daemon.toml"
    config.write_text(f'store = "store"\nport = {port}\nconcurrency = 1\n')
    daemon = subprocess.Popen([sys.executable, "-m", "edge_sdk.cli", "serve", "--config", str(config)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1)
                break
            except httpx.HTTPError:
                assert daemon.poll() is None, "the daemon exited"
                time.sleep(0.1)
        assert [m["id"] for m in models.json()["data"]] == ["digits-cnn"]
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_cli_with_its_option_tables_loads_without_the_serve_extra():
    """The tables read the config models at import; a board without `[serve]` still runs install/models."""
    import subprocess
    import sys

    blocker = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('fastapi', 'starlette', 'uvicorn', 'torch'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from edge_sdk.apps.cli.main import app\n"
    )
    result = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
