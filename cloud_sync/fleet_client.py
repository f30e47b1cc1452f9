"""The operator's side of a gateway's fleet routes: rollouts and device groups (a publisher key)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cloud_sync.sync import RegistryClient


class FleetClient(RegistryClient):
    """Starts, lists and steers staged rollouts; lists devices and sets their groups."""

    def start_rollout(self, spec: dict[str, Any]) -> dict[str, Any]:
        return dict(self._request("POST", "/v1/rollouts", json=spec, retry=False).json())

    def rollouts(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/v1/rollouts").json()["data"])

    def rollout(self, rollout_id: int) -> dict[str, Any]:
        return dict(self._request("GET", f"/v1/rollouts/{rollout_id}").json())

    def control(self, rollout_id: int, action: str, reason: str = "") -> dict[str, Any]:
        response = self._request("POST", f"/v1/rollouts/{rollout_id}/{action}", json={"reason": reason}, retry=False)
        return dict(response.json())

    def devices(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/v1/devices").json()["data"])

    def set_groups(self, device: str, groups: Sequence[str]) -> dict[str, Any]:
        return dict(self._request("PUT", f"/v1/devices/{device}/groups", json={"groups": list(groups)}).json())
