"""Hybrid serving as a library (layer: libraries; no app inside, nothing binds a port here).

The router and the cloud client (retries, circuit breaker), the durable offline queue and its delivery,
idempotency records, the bundle registry's storage, the device's pull of newer bundles (sync) and the
telemetry store. The gateway app that serves them is `edge_sdk.apps.gateway`.
"""
