"""Device profiles: what a target board offers, and whether a model fits it."""

from device_profiles.loader import all_profiles, load_profile, profile_ids
from device_profiles.schema import DeviceClass, DeviceProfile

__all__ = ["DeviceClass", "DeviceProfile", "all_profiles", "load_profile", "profile_ids"]
