"""Detect the 'host' DeviceProfile from the running Linux machine: /proc, /sys, os-release and a copy benchmark.

Only the stdlib and numpy, and every probe has a fallback, so this works in containers and on odd kernels.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from functools import cache
from pathlib import Path

from device_profiles.schema import (
    BackendSupport,
    Cpu,
    DeviceProfile,
    Memory,
    OperatingSystem,
    Power,
    Storage,
)
from edge_sdk.fsutil import cache_dir
from edge_sdk.types import Backend

BUDGET_SHARE = 0.7  # of MemAvailable: leave room for the caller's own process and the page cache
BENCH_BYTES = 64 * 1024 * 1024
BENCH_SECONDS = 0.35  # no new run starts after this (allocation and warm-up included): the probe stays < 0.5 s
# The probe's result is kept (in the user's cache) for this long, for the same CPU, memory and kernel: a daemon's
# start, and every command that reads the 'host' profile, would otherwise pay a third of a second for it.
BANDWIDTH_KEEP_S = 7 * 24 * 3600

# /proc/cpuinfo flag -> our feature name; the order here is the order in the profile.
# The VNNI/AMX-int8 flags decide which int8 kernels an engine picks on x86, so a measurement records them.
_X86_FEATURES = {
    "avx2": "avx2", "avx512f": "avx512", "avx512_vnni": "avx512-vnni", "avx_vnni": "avx-vnni", "amx_tile": "amx",
    "amx_int8": "amx-int8", "fma": "fma", "f16c": "f16c",
}  # fmt: skip
_ARM_FEATURES = {"asimd": "neon", "fphp": "fp16", "asimddp": "dotprod", "i8mm": "i8mm", "bf16": "bf16"}
_ARCH_ALIASES = {"arm64": "aarch64", "amd64": "x86_64", "x64": "x86_64"}
# aarch64 kernels print no model name, only the MIDR part number; these are Arm Ltd. (implementer 0x41) cores.
_ARM_PARTS = {
    "0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77", "0xd40": "Neoverse-V1", "0xd41": "Cortex-A78",
    "0xd42": "Cortex-A78AE", "0xd44": "Cortex-X1", "0xd46": "Cortex-A510", "0xd47": "Cortex-A710",
    "0xd48": "Cortex-X2", "0xd49": "Neoverse-N2", "0xd4f": "Neoverse-V2",
}  # fmt: skip


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _cpuinfo() -> dict[str, str]:
    """Fields of the first processor block; later blocks repeat them (big.LITTLE parts may differ, flags do not)."""
    fields: dict[str, str] = {}
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    return fields


def _arch() -> str:
    machine = platform.machine().lower() or "unknown"
    return _ARCH_ALIASES.get(machine, machine)


def _cores() -> int:
    # Respect the affinity mask (taskset, container cpusets), not the machine's total.
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _features(arch: str, info: dict[str, str]) -> tuple[str, ...]:
    flags = set((info.get("flags") or info.get("features") or "").split())
    table = _ARM_FEATURES if arch == "aarch64" else _X86_FEATURES
    return tuple(name for flag, name in table.items() if flag in flags)


@cache
def host_isa() -> str:
    """Which CPU measured something, as an accuracy report records it: 'x86_64 (avx2, avx512-vnni, ...)'."""
    arch = _arch()
    features = _features(arch, _cpuinfo())
    return f"{arch} ({', '.join(features)})" if features else arch


def _max_freq_ghz(info: dict[str, str]) -> float:
    khz = _read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    for text, scale in ((khz, 1e6), (info.get("cpu mhz"), 1e3)):
        try:
            value = float(text or "") / scale
        except ValueError:
            continue
        if value > 0:
            return round(value, 2)
    return 1.0  # unknown (VMs often hide it); a neutral placeholder


def _cpu_model(arch: str, info: dict[str, str]) -> str:
    for key in ("model name", "hardware", "cpu model", "processor"):
        value = info.get(key, "")
        if value and not value.isdigit():  # on aarch64 'processor' is just the index
            return value
    part = info.get("cpu part", "").lower()
    if info.get("cpu implementer", "").lower() == "0x41" and part:
        return _ARM_PARTS.get(part, f"Arm core part {part}")
    return platform.processor() or f"unknown {arch} CPU"


def _meminfo_mb() -> tuple[int, int]:
    """(MemTotal, MemAvailable) in MiB, from /proc/meminfo or sysconf."""
    kb: dict[str, int] = {}
    for line in (_read("/proc/meminfo") or "").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            kb[key.strip()] = int(parts[0])
    total = kb.get("MemTotal", 0) // 1024
    if total <= 0:
        try:
            total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // (1024 * 1024)
        except (ValueError, OSError):
            total = 1024
    available = kb.get("MemAvailable", kb.get("MemFree", 0)) // 1024 or total // 2
    return max(total, 1), max(min(available, total), 1)


def _cgroup_room_mb() -> int | None:
    """Memory the cgroup v2 limit still allows, when one is set: /proc/meminfo shows the whole machine."""
    limit, used = _read("/sys/fs/cgroup/memory.max"), _read("/sys/fs/cgroup/memory.current")
    if not limit or not limit.strip().isdigit():
        return None
    current = int(used.strip()) if used and used.strip().isdigit() else 0
    return max(int(limit.strip()) - current, 0) // (1024 * 1024)


def _bandwidth_gbps(machine: dict[str, object], available_mb: int) -> tuple[float, str]:
    """The copy bandwidth measured on this machine within BANDWIDTH_KEEP_S, else measured now and kept; with
    where the number comes from."""
    path = cache_dir() / "host-bandwidth.json"
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
        if kept["machine"] == machine and 0 <= time.time() - kept["measured_at"] < BANDWIDTH_KEEP_S:
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(kept["measured_at"]))
            return float(kept["gbps"]), f"measured {when} and kept in {path}"
    except (OSError, ValueError, KeyError, TypeError):
        pass
    gbps = _copy_bandwidth_gbps(available_mb)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps({"machine": machine, "measured_at": time.time(), "gbps": gbps}))
        partial.replace(path)
    except OSError:
        pass  # a read-only home: measured again next time
    return gbps, "measured now"


def _copy_bandwidth_gbps(available_mb: int) -> float:
    """Best-of-N single-thread numpy copy, counting the read and the write (as STREAM 'copy' does)."""
    import numpy as np

    deadline = time.perf_counter() + BENCH_SECONDS
    nbytes = min(BENCH_BYTES, max(available_mb * 1024 * 1024 // 8, 1024 * 1024))
    src = np.ones(nbytes // 8, dtype=np.float64)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # warm-up: fault the destination pages in
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
        if time.perf_counter() > deadline:
            break
    return round(2 * src.nbytes / max(best, 1e-9) / 1e9, 1)


def _os_release() -> OperatingSystem:
    fields: dict[str, str] = {}
    for line in (_read("/etc/os-release") or _read("/usr/lib/os-release") or "").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip().strip('"')
    name = fields.get("NAME") or platform.system() or "Linux"
    version = fields.get("VERSION_ID") or fields.get("VERSION") or "unknown"
    return OperatingSystem(name=name, version=f"{version} (kernel {platform.release()})")


def _device_name(cpu_model: str) -> str:
    # Boards (Raspberry Pi, Jetson) name themselves in the device tree; PCs and VMs do not.
    board = (_read("/proc/device-tree/model") or "").strip("\x00\n ")
    return f"This machine ({board or cpu_model})"


@cache
def detect_host() -> DeviceProfile:
    """The machine this process runs on, as a DeviceProfile with id 'host'. Cached: measured once a process."""
    arch, info = _arch(), _cpuinfo()
    model = _cpu_model(arch, info)
    total_mb, available_mb = _meminfo_mb()
    room = _cgroup_room_mb()
    usable_mb = min(available_mb, room) if room is not None else available_mb
    cores = _cores()
    machine = {"arch": arch, "model": model, "cores": cores, "total_mb": total_mb, "kernel": platform.release()}
    bandwidth, measured = _bandwidth_gbps(machine, usable_mb)
    disk_gb = max(shutil.disk_usage("/").total // 10**9, 1)
    return DeviceProfile.model_validate(
        {
            "id": "host",
            "name": _device_name(model),
            "class": "host",
            "cpu": Cpu(
                arch=arch,
                model=model,
                cores=cores,
                max_freq_ghz=_max_freq_ghz(info),
                features=_features(arch, info),
                source="detected from /proc/cpuinfo, sched_getaffinity and /sys/devices/system/cpu/cpu0/cpufreq "
                "on this machine",
            ),
            "memory": Memory(
                total_mb=total_mb,
                budget_mb=max(int(usable_mb * BUDGET_SHARE), 1),
                bandwidth_gbps=max(bandwidth, 0.1),
                source="detected from /proc/meminfo (budget = 70% of MemAvailable, capped by the cgroup memory "
                f"limit) and a single-thread numpy copy of 64 MiB (read + write, best of a few) on this machine, "
                f"{measured}",
            ),
            "storage": Storage(
                kind="disk", size_gb=disk_gb, source="detected from shutil.disk_usage('/') on this machine"
            ),
            "os": _os_release(),
            "power": Power(typical_w=65.0, max_w=65.0, source="unknown for a detected host; placeholder"),
            "backends": {
                Backend.ONNX: BackendSupport(targets=("CPUExecutionProvider",)),
                Backend.EXECUTORCH: BackendSupport(targets=("xnnpack", "portable")),
                Backend.GGUF: BackendSupport(targets=("cpu",)),
                Backend.TFLITE: BackendSupport(targets=("cpu", "xnnpack")),
            },
        }
    )


def available_memory_bytes() -> int:
    """Memory free for a new model right now: MemAvailable, or less when a cgroup limit is closer."""
    _, available_mb = _meminfo_mb()
    room_mb = _cgroup_room_mb()
    return (available_mb if room_mb is None else min(available_mb, room_mb)) * 1024 * 1024


def process_resident_bytes() -> int | None:
    """This process's resident memory now (VmRSS), or None where /proc does not say."""
    try:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))
    except (OSError, StopIteration, ValueError):
        return None
