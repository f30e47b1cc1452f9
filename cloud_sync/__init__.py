"""Hybrid serving: routing between device and cloud, the durable offline queue, OTA pulls (later issues)."""
