"""Bundles: one model, one or more verified variants, golden data, packed as a directory or `.edgebundle`."""

from edge_sdk.bundle.bundle import Bundle, GoldenSet, verify_dir
from edge_sdk.bundle.manifest import (
    SCHEMA_VERSION,
    AccuracyReport,
    FailedVariant,
    FileEntry,
    FitReport,
    Manifest,
    Metric,
    Preprocessing,
    Recipe,
    RuntimeRequirement,
    SourceInfo,
    Variant,
)
from edge_sdk.bundle.writer import BundleWriter

__all__ = [
    "SCHEMA_VERSION",
    "AccuracyReport",
    "Bundle",
    "BundleWriter",
    "FailedVariant",
    "FileEntry",
    "FitReport",
    "GoldenSet",
    "Manifest",
    "Metric",
    "Preprocessing",
    "Recipe",
    "RuntimeRequirement",
    "SourceInfo",
    "Variant",
    "verify_dir",
]
