"""`edge_sdk.cli.main:main`, the entry point that scripts installed by an earlier edge-sdk name."""

from edge_sdk.apps.cli.main import app, main

__all__ = ["app", "main"]
