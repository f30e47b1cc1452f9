"""Device profiles: the shipped YAML files, user files, host detection, and `edge-sdk profiles`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from device_profiles import host
from device_profiles.loader import DATA_DIR, load_profile, profile_ids
from device_profiles.schema import DeviceClass, DeviceProfile
from edge_sdk.apps.cli.profiles import profiles_app
from edge_sdk.errors import ProfileError
from edge_sdk.types import Backend

SHIPPED = ["rpi4", "rpi5", "jetson-orin-nano", "jetson-agx-orin", "pixel8", "galaxy-s24", "iphone15-pro"]
ALL_IDS = [*SHIPPED, "host"]

# What each engine can really be asked for; a typo in a YAML file shows up here.
KNOWN_TARGETS = {
    Backend.ONNX: {
        "CPUExecutionProvider",
        "XnnpackExecutionProvider",
        "CUDAExecutionProvider",
        "TensorrtExecutionProvider",
        "QNNExecutionProvider",
        "CoreMLExecutionProvider",
        "NnapiExecutionProvider",
    },
    Backend.EXECUTORCH: {"xnnpack", "vulkan", "qnn", "coreml", "mps", "portable"},
    Backend.GGUF: {"cpu", "cpu-neon", "cuda", "metal", "vulkan", "opencl"},
    Backend.TFLITE: {"cpu", "xnnpack", "gpu", "nnapi", "qnn", "coreml"},
}


def test_every_documented_id_is_listed_and_loads():
    assert sorted(profile_ids()) == sorted(ALL_IDS)
    for profile_id in ALL_IDS:
        assert load_profile(profile_id).id == profile_id


def test_file_name_matches_id():
    for path in DATA_DIR.glob("*.yaml"):
        assert yaml.safe_load(path.read_text())["id"] == path.stem


@pytest.mark.parametrize("profile_id", SHIPPED)
def test_shipped_profile_is_plausible_and_cites_sources(profile_id):
    p = load_profile(profile_id)
    assert 0 < p.memory.budget_mb < p.memory.total_mb
    assert p.device_class is not DeviceClass.HOST
    assert p.power.typical_w <= p.power.max_w
    sources = [p.cpu.source, p.memory.source, p.storage.source, p.power.source, *(a.source for a in p.accelerators)]
    assert all(s.strip() for s in sources)
    assert set(p.cpu.features) >= {"neon"} and p.cpu.arch == "aarch64"
    for backend, support in p.backends.items():
        assert support.targets, f"{profile_id}: {backend} lists no targets"
        assert set(support.targets) <= KNOWN_TARGETS[backend], f"{profile_id}: {support.targets}"
    assert all(p.supports(b) for b in Backend)


def test_phone_budget_is_a_share_of_ram_not_all_of_it():
    for profile_id in ("pixel8", "galaxy-s24", "iphone15-pro"):
        memory = load_profile(profile_id).memory
        assert 0.35 <= memory.budget_mb / memory.total_mb <= 0.55


def test_typo_suggests_the_nearest_id_and_lists_the_valid_ones():
    with pytest.raises(ProfileError) as info:
        load_profile("rpi55")
    message = str(info.value)
    assert "'rpi55'" in message and "Did you mean 'rpi5'" in message
    assert all(f"'{pid}'" in message for pid in ALL_IDS)


def _rpi5_data() -> dict:
    return yaml.safe_load((DATA_DIR / "rpi5.yaml").read_text())


def test_user_yaml_loads_by_path(tmp_path):
    data = _rpi5_data() | {"id": "my-board", "name": "My board"}
    path = tmp_path / "my-board.yaml"
    path.write_text(yaml.safe_dump(data))
    for ref in (path, str(path)):
        profile = load_profile(ref)
        assert (profile.id, profile.name) == ("my-board", "My board")
        assert profile.memory == load_profile("rpi5").memory


def test_unknown_field_is_named(tmp_path):
    data = _rpi5_data()
    data["cpu"]["turbo_ghz"] = 3.0
    path = tmp_path / "board.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ProfileError, match=r"cpu\.turbo_ghz: unknown field"):
        load_profile(path)


def test_wrong_value_is_named(tmp_path):
    data = _rpi5_data()
    data["memory"]["budget_mb"] = -1
    path = tmp_path / "board.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ProfileError, match=r"memory\.budget_mb"):
        load_profile(path)


def test_invalid_yaml_is_a_profile_error(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("id: rpi5\ncpu: [unclosed\n")
    with pytest.raises(ProfileError, match="not valid YAML"):
        load_profile(path)


def test_missing_yaml_file_is_a_profile_error(tmp_path):
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile(tmp_path / "nope.yaml")


# --- host detection -------------------------------------------------------------------------------------------


def _meminfo_total_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no MemTotal in /proc/meminfo")


def test_host_is_detected_from_this_machine():
    p = load_profile("host")
    assert p is host.detect_host()  # cached: the benchmark runs once a process
    assert (p.id, p.device_class) == ("host", DeviceClass.HOST)
    assert p.cpu.cores == len(os.sched_getaffinity(0))
    assert abs(p.memory.total_mb - _meminfo_total_mb()) <= max(16, _meminfo_total_mb() // 100)
    assert 0 < p.memory.budget_mb < p.memory.total_mb
    assert p.memory.bandwidth_gbps > 0
    assert p.cpu.max_freq_ghz > 0 and p.storage.size_gb > 0
    assert "on this machine" in p.cpu.source and "on this machine" in p.memory.source
    assert {b: s.targets for b, s in p.backends.items()} == {
        Backend.ONNX: ("CPUExecutionProvider",),
        Backend.EXECUTORCH: ("xnnpack", "portable"),
        Backend.GGUF: ("cpu",),
        Backend.TFLITE: ("cpu", "xnnpack"),
    }


def test_host_features_match_cpuinfo_flags():
    flags: set[str] = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.lower().startswith(("flags", "features")):
            flags = set(line.split(":", 1)[1].split())
            break
    p = host.detect_host()
    pairs = (
        {"neon": "asimd", "dotprod": "asimddp"} if p.cpu.arch == "aarch64" else {"avx2": "avx2", "avx512": "avx512f"}
    )
    for feature, flag in pairs.items():
        assert (feature in p.cpu.features) == (flag in flags), feature


def _undetected() -> DeviceProfile:
    return host.detect_host.__wrapped__()  # bypass the cache


def test_host_bandwidth_is_measured_once_and_kept_for_this_machine(monkeypatch, tmp_path):
    # A daemon's start reads the host profile: the 0.35 s copy probe runs once, not at every start.
    monkeypatch.setenv("EDGE_SDK_CACHE", str(tmp_path))
    runs: list[int] = []
    monkeypatch.setattr(host, "_copy_bandwidth_gbps", lambda mb: runs.append(mb) or 12.5)
    first, second = _undetected(), _undetected()
    assert runs == [runs[0]] and first.memory.bandwidth_gbps == second.memory.bandwidth_gbps == 12.5
    assert "measured now" in first.memory.source and "kept in" in second.memory.source
    kept = tmp_path / "host-bandwidth.json"
    document = json.loads(kept.read_text())
    document["machine"]["cores"] += 1  # another machine (or this one with other hardware): measured again
    kept.write_text(json.dumps(document))
    assert _undetected().memory.bandwidth_gbps == 12.5 and len(runs) == 2


def test_host_detection_survives_missing_files(monkeypatch):
    monkeypatch.setattr(host, "_read", lambda path: None)
    p = _undetected()
    assert p.cpu.max_freq_ghz == 1.0 and p.cpu.features == ()
    assert 0 < p.memory.budget_mb < p.memory.total_mb
    assert p.cpu.cores == len(os.sched_getaffinity(0))


def test_aarch64_flags_map_to_features(monkeypatch):
    cpuinfo = (
        "processor\t: 0\nBogoMIPS\t: 108.00\n"
        "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc "
        "dcpop asimddp\nCPU implementer\t: 0x41\nCPU part\t: 0xd0b\n"
    )
    files = {"/proc/cpuinfo": cpuinfo, "/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq": "2400000\n"}
    monkeypatch.setattr(host, "_read", files.get)
    monkeypatch.setattr(host.platform, "machine", lambda: "aarch64")
    p = _undetected()
    assert p.cpu.arch == "aarch64"
    assert p.cpu.features == ("neon", "fp16", "dotprod")
    assert p.cpu.model == "Cortex-A76" and p.cpu.max_freq_ghz == 2.4


# --- CLI ------------------------------------------------------------------------------------------------------

runner = CliRunner()


@pytest.mark.parametrize("columns", ["80", "200"])
def test_cli_list_shows_every_id(columns):
    result = runner.invoke(profiles_app, ["list"], env={"COLUMNS": columns})
    assert result.exit_code == 0, result.output
    for profile_id in ALL_IDS:
        assert profile_id in result.output


def test_cli_show_prints_the_sections_and_sources():
    result = runner.invoke(profiles_app, ["show", "rpi5"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Cortex-A76" in result.output
    for text in ("Memory", "Power", "Backends", "XnnpackExecutionProvider", "product brief"):
        assert text in result.output


def test_cli_show_accepts_a_yaml_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(_rpi5_data() | {"id": "mine"}))
    result = runner.invoke(profiles_app, ["show", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "mine" in result.output


def test_cli_show_typo_exits_2_with_the_message():
    result = runner.invoke(profiles_app, ["show", "rpi55"])
    assert result.exit_code == 2
    assert "unknown device profile 'rpi55'" in result.stderr
    assert "Did you mean 'rpi5'" in result.stderr
    assert "Traceback" not in result.output
