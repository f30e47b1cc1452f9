"""Schema 2: what it adds, and that a schema-1 bundle written by the previous release still installs and serves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_sdk.bundle import SCHEMA_VERSION, Bundle
from edge_sdk.bundle.manifest import parse_manifest
from edge_sdk.errors import UnsupportedSchemaError
from edge_sdk.types import DType, TensorSpec

V1 = Path(__file__).parents[1] / "data" / "v1_bundle"


def test_a_v1_manifest_reads_with_the_sample_axis_it_always_meant():
    bundle = Bundle.open(V1 / "tiny-mlp-v1")
    assert bundle.manifest.schema_version == 1 and SCHEMA_VERSION == 2
    spec = bundle.variant().inputs[0]
    assert spec.shape == ("batch", 8) and spec.sample_axis == 0  # schema 1 sliced axis 0 of every input
    assert bundle.manifest.preprocessing is None and bundle.manifest.failed == ()


def test_a_signed_v1_bundle_still_verifies(tmp_path):
    from edge_sdk.bundle.signing import load_trusted

    # Schema 2 adds fields with defaults; the signature covers the manifest as it was written, not as re-dumped.
    Bundle.open(V1 / "tiny-mlp-v1-signed", trust=[load_trusted(V1 / "release.key.pub")])


def test_an_older_reader_is_told_to_upgrade(tmp_path):
    data = json.loads((V1 / "tiny-mlp-v1" / "manifest.json").read_text())
    data["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(UnsupportedSchemaError, match="upgrade edge-sdk"):
        parse_manifest(json.dumps(data).encode())


def test_scalar_and_state_specs_declare_their_sample_axis():
    assert TensorSpec(name="sr", dtype=DType.INT64, shape=()).sample_axis is None
    state = TensorSpec(name="state", dtype=DType.FLOAT32, shape=(2, "batch", 64), sample_axis=1)
    assert state.batched and TensorSpec.model_validate(state.model_dump()).sample_axis == 1
    with pytest.raises(ValueError, match="sample axis 3 does not exist"):
        TensorSpec(name="state", dtype=DType.FLOAT32, shape=(2, "batch", 64), sample_axis=3)
