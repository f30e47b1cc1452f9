"""Hybrid serving: the router and the cloud client (retries, circuit breaker), the durable offline queue and its
delivery, the cloud gateway with its bundle registry, and the device's pull of newer bundles."""
