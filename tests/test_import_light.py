import subprocess
import sys

HEAVY = ("torch", "onnxruntime", "executorch", "llama_cpp", "transformers", "fastapi", "onnx")


def _loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_import_edge_sdk_loads_no_engine():
    assert _loaded_after("import edge_sdk") == []


def test_public_names_and_bundle_reading_stay_light():
    # Reading and verifying a bundle is what a device does first; it must not drag torch in.
    assert _loaded_after("import edge_sdk; edge_sdk.Bundle; edge_sdk.Backend; import edge_sdk.bundle") == []


def test_running_an_onnx_bundle_imports_no_torch(onnx_bundle, tmp_path):
    import numpy as np

    x = tmp_path / "x.npz"
    np.savez(x, input=np.zeros((2, 1, 8, 8), np.float32))
    code = (
        "import edge_sdk, numpy as np\n"
        f"s = edge_sdk.load({str(onnx_bundle.root)!r}, 'onnx-int8-static')\n"
        "s.run(dict(np.load(" + repr(str(x)) + ")))\n"
        f"edge_sdk.check_golden({str(onnx_bundle.root)!r}, 'onnx-none')"
    )
    loaded = _loaded_after(code)
    assert "torch" not in loaded
    assert "onnxruntime" in loaded


def test_the_daemon_without_a_cloud_imports_no_http_client_no_yaml_and_no_queue():
    # Its start is measured against llama.cpp's own server (benchmarks/serve_start.py): httpx (with the rich and
    # click its command line pulls in) cost ~50 ms, the YAML parser 10 ms, the offline queue (SQLite) ~5 ms and
    # tarfile ~2 ms, for a daemon that serves bundle directories as the detected host with no cloud configured (so
    # no queue is opened).
    probe = (
        "import sys\n"
        "import edge_sdk.apps.daemon.app, edge_sdk.apps.daemon.server\n"
        "from device_profiles import load_profile\n"
        "load_profile('host')\n"
        "print(' '.join(m for m in ('httpx', 'yaml', 'sqlite3', 'cloud_sync.queue', 'tarfile') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == []
