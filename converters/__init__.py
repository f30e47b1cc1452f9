"""Host-side conversion: model sources, per-backend exporters, accuracy verification, the convert pipeline.

Importing this package imports no engine; each exporter imports its own when it is first used.
"""
