"""The apps: everything that prints, binds a port or opens a connection, composed from the layers below.

cli/       the `edge-sdk` command line (the only code that prints to a terminal or exits)
daemon/    the device daemon: OpenAI-compatible and tensor APIs over installed bundles
gateway/   the cloud gateway: the daemon with the upstream as its cloud, plus device auth, registry, telemetry
flash/     pushing a release to boards over SSH or to a mounted card
"""
