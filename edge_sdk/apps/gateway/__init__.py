"""`edge-sdk cloud serve`: the cloud side of hybrid serving, built on the device daemon and cloud_sync's stores."""
