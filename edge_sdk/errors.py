"""The one error tree of edge-sdk.

    EdgeSDKError
    ├── ConfigError (ValueError)            bad option, unknown profile, malformed YAML
    │   ├── ProfileError                    a device profile that does not exist or does not validate
    │   ├── UnknownModelError               a request for a model the daemon does not serve
    │   ├── UnknownItemError (LookupError)  a queued job id that does not exist
    │   └── IdempotencyKeyReusedError       an idempotency key already queued for a different request
    ├── ModelSourceError (ValueError)       a model file or object that cannot be read as a model
    ├── ExportError (RuntimeError)          an engine's exporter refused the model
    ├── AccuracyGateError (RuntimeError)    an exported variant is outside its tolerance
    ├── BundleError (ValueError)            a bundle that is malformed, tampered or unsafe
    │   ├── UnsupportedSchemaError          a manifest written by a newer edge-sdk
    │   ├── StoreError                      an install, activation or rollback the device store refuses
    │   └── RegistryError                   a publish the registry refuses; a download whose digest is wrong
    │       └── PublishConflictError        the name and version are published already, with other contents
    ├── BackendUnavailableError (ImportError)  the engine's optional dependency is not installed
    ├── InputError (ValueError)             inputs that do not match a session's TensorSpecs
    │   ├── ContextLengthError              prompt + max_tokens longer than the session's context
    │   └── NonFiniteInputError             a tensor input holding NaN or ±Infinity
    ├── UnsupportedOperationError (NotImplementedError)  e.g. generate() on a tensor model
    ├── RuntimeFailure (RuntimeError)       an engine failed while loading or running
    ├── OverloadedError                     a model's queue is full: try again after `retry_after_s`
    ├── RequestAbandonedError               the client left while its request waited: it is never started
    ├── QueueFullError (OverflowError)      the durable offline queue is at its cap
    ├── QueueLockedError (RuntimeError)     another process owns the offline queue's file
    ├── CloudError (ConnectionError)        the cloud target could not answer as asked
    │   ├── CloudUnavailableError           unreachable, or kept failing after the retries
    │   │   └── BreakerOpenError            failing fast: the circuit breaker is open
    │   ├── CloudResponseError              the cloud answered with an error status that retrying cannot fix
    │   └── TransferError                   a registry upload or download that failed: unreachable, cut, refused
    ├── RouteRefusedError (RuntimeError)    the router refused a request (privacy policy, no cloud): never sent
    └── DeviceError (ConnectionError)       a board that cannot be reached, or a command on it that failed

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


class UnknownModelError(ConfigError):
    pass


class UnknownItemError(ConfigError, LookupError):
    pass


class IdempotencyKeyReusedError(ConfigError):
    """The key is already queued for a different request."""


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


class PublishConflictError(RegistryError):
    """The name and version are published already, with other contents."""


class BackendUnavailableError(EdgeSDKError, ImportError):
    pass


class InputError(EdgeSDKError, ValueError):
    pass


class ContextLengthError(InputError):
    pass


class NonFiniteInputError(InputError):
    """NaN or ±Infinity in a tensor input: most engines compute garbage from it without a word."""


class UnsupportedOperationError(EdgeSDKError, NotImplementedError):
    pass


class RuntimeFailure(EdgeSDKError, RuntimeError):
    pass


# --- serving and the offline queue (daemon, cloud_sync) ---


class OverloadedError(EdgeSDKError):
    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RequestAbandonedError(EdgeSDKError):
    """The client disconnected while its request waited for a slot; the request was not started."""


class QueueFullError(EdgeSDKError, OverflowError):
    def __init__(self, message: str, retry_after_s: float = 30.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QueueLockedError(EdgeSDKError, RuntimeError):
    """Another process owns this queue file (two deliverers would recover each other's claims)."""


# --- cloud and routing (cloud_sync) ---


class CloudError(EdgeSDKError, ConnectionError):
    """`retry_after_s`: when the caller may try again, if known."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class CloudUnavailableError(CloudError):
    pass


class BreakerOpenError(CloudUnavailableError):
    pass


class CloudResponseError(CloudError):
    """The cloud's own status and body, to hand back to the caller unchanged."""

    def __init__(self, message: str, *, status_code: int, body: bytes, retry_after_s: float | None = None) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.status_code, self.body = status_code, body


class TransferError(CloudError):
    pass


class RouteRefusedError(EdgeSDKError, RuntimeError):
    """`reason` is the router's reason code; `status_code` the HTTP status the daemon answers with."""

    def __init__(self, message: str, *, reason: str, status_code: int, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.reason, self.status_code, self.retry_after_s = reason, status_code, retry_after_s


# --- boards (flash) ---


class DeviceError(EdgeSDKError, ConnectionError):
    pass


def choices(values: Iterable[object]) -> str:
    """Format a closed set for an error message: 'a', 'b', 'c'."""
    return ", ".join(repr(str(v)) for v in values)
