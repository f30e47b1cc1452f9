"""The stable entry of the command line: `python -m edge_sdk.cli` and the `edge-sdk` script.

Installed systemd units and boards call these names, so they stay while the CLI itself lives in
`edge_sdk.apps.cli`.
"""
