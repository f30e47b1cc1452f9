"""The `edge-sdk` command line: the only part of edge-sdk that prints or exits."""
