"""Flash verified bundles onto boards over SSH or onto a mounted card: resumable, verified on the device."""

from edge_sdk.apps.flash.flasher import (
    FlashOptions,
    FlashResult,
    Release,
    Stage,
    flash_many,
    flash_one,
    prepare,
    survey,
)
from edge_sdk.apps.flash.plan import TargetPlan, plan_target
from edge_sdk.apps.flash.targets import Scheme, Target, parse_target, read_targets

__all__ = [
    "FlashOptions",
    "FlashResult",
    "Release",
    "Scheme",
    "Stage",
    "Target",
    "TargetPlan",
    "flash_many",
    "flash_one",
    "parse_target",
    "plan_target",
    "prepare",
    "read_targets",
    "survey",
]
