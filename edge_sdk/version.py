"""The version of edge-sdk, a kernel module so that the libraries can stamp bundles without importing the facade."""

__version__ = "0.1.0"
