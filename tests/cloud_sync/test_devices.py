"""Device key files: what the gateway accepts, and what it refuses with the line and the reason."""

from __future__ import annotations

import pytest

from edge_sdk.apps.gateway.devices import read_device_groups, read_key_file
from edge_sdk.errors import ConfigError


def test_key_file(tmp_path):
    path = tmp_path / "devices.txt"
    path.write_text("# fleet\npi-01 aaaaaaaaaaaaaaaaaaaa\n\njetson:7  bbbbbbbbbbbbbbbbbbbb  \n")
    assert read_key_file(path) == {"aaaaaaaaaaaaaaaaaaaa": "pi-01", "bbbbbbbbbbbbbbbbbbbb": "jetson:7"}
    assert read_device_groups(path) == {"pi-01": (), "jetson:7": ()}


def test_key_file_groups(tmp_path):
    path = tmp_path / "devices.txt"
    path.write_text("pi-01 aaaaaaaaaaaaaaaaaaaa groups=kitchen,eu\npi-02 bbbbbbbbbbbbbbbbbbbb\n")
    assert read_device_groups(path) == {"pi-01": ("kitchen", "eu"), "pi-02": ()}
    assert read_key_file(path) == {"aaaaaaaaaaaaaaaaaaaa": "pi-01", "bbbbbbbbbbbbbbbbbbbb": "pi-02"}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("pi-01\n", "line 1: expected '<id> <key>' or '<id> <key> groups=a,b', got 1 words"),
        ("pi-01 aaaaaaaaaaaaaaaaaaaa kitchen\n", "line 1: expected '<id> <key>' or '<id> <key> groups=a,b', got 3"),
        ("pi-01 aaaaaaaaaaaaaaaaaaaa groups=a/b\n", "line 1: group 'a/b' must be letters"),
        ("pi-01 short\n", "line 1: the key of 'pi-01' is shorter than 16 characters"),
        ("pi/01 aaaaaaaaaaaaaaaaaaaa\n", "line 1: id 'pi/01' must be letters"),
        ("a aaaaaaaaaaaaaaaaaaaa\nb aaaaaaaaaaaaaaaaaaaa\n", "line 2: a key appears twice"),
        ("a aaaaaaaaaaaaaaaaaaaa\na bbbbbbbbbbbbbbbbbbbb\n", "line 2: id 'a' appears twice"),
        ("# nobody\n", "holds no '<id> <key>' line"),
    ],
)
def test_key_file_refusals(tmp_path, text, problem):
    path = tmp_path / "devices.txt"
    path.write_text(text)
    with pytest.raises(ConfigError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        read_key_file(path)
    with pytest.raises(ConfigError, match="does not exist"):
        read_key_file(tmp_path / "missing.txt")
