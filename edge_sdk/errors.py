"""The one error tree of edge-sdk.

    EdgeSDKError
    ├── ConfigError (ValueError)            bad option, unknown profile, malformed YAML
    │   └── ProfileError                    a device profile that does not exist or does not validate
    ├── ModelSourceError (ValueError)       a model file or object that cannot be read as a model
    ├── ExportError (RuntimeError)          an engine's exporter refused the model
    ├── AccuracyGateError (RuntimeError)    an exported variant is outside its tolerance
    ├── BundleError (ValueError)            a bundle that is malformed, tampered or unsafe
    │   ├── UnsupportedSchemaError          a manifest written by a newer edge-sdk
    │   ├── StoreError                      an install, activation or rollback the device store refuses
    │   └── RegistryError                   a publish the registry refuses; a download whose digest is wrong
    ├── BackendUnavailableError (ImportError)  the engine's optional dependency is not installed
    ├── InputError (ValueError)             inputs that do not match a session's TensorSpecs
    ├── UnsupportedOperationError (NotImplementedError)  e.g. generate() on a tensor model
    ├── RuntimeFailure (RuntimeError)       an engine failed while loading or running
    └── TransferError (ConnectionError)     a registry that cannot be reached, or refuses a request

Each message names the bad value and, where there is a closed set, the valid choices.
"""

from __future__ import annotations

from collections.abc import Iterable


class EdgeSDKError(Exception):
    """Root of every error edge-sdk raises on purpose."""


class ConfigError(EdgeSDKError, ValueError):
    pass


class ProfileError(ConfigError):
    pass


class ModelSourceError(EdgeSDKError, ValueError):
    pass


class ExportError(EdgeSDKError, RuntimeError):
    pass


class AccuracyGateError(EdgeSDKError, RuntimeError):
    pass


class BundleError(EdgeSDKError, ValueError):
    pass


class UnsupportedSchemaError(BundleError):
    pass


class StoreError(BundleError):
    pass


class RegistryError(BundleError):
    pass


class BackendUnavailableError(EdgeSDKError, ImportError):
    pass


class InputError(EdgeSDKError, ValueError):
    pass


class UnsupportedOperationError(EdgeSDKError, NotImplementedError):
    pass


class RuntimeFailure(EdgeSDKError, RuntimeError):
    pass


class TransferError(EdgeSDKError, ConnectionError):
    pass


def choices(values: Iterable[object]) -> str:
    """Format a closed set for an error message: 'a', 'b', 'c'."""
    return ", ".join(repr(str(v)) for v in values)
