"""Staged rollouts against a real gateway on loopback, with simulated devices and a clock the test moves.

Each simulated device has its own store, syncs through `cloud_sync.sync` with its own key, and reports the
daemon's telemetry snapshot shape (counters from a real `Metrics`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import httpx
import pytest
from gateway_helpers import PUBLISHER_KEY, auth, gateway_config, publish, running_gateway
from typer.testing import CliRunner

from cloud_sync.rollout_rules import RolloutSpec, stage_members
from cloud_sync.sync import Outcome, RegistryClient, sync
from edge_sdk.apps.cli.main import app
from edge_sdk.apps.daemon.pool import DirectorySource
from edge_sdk.apps.gateway.devices import read_device_groups, read_key_file
from edge_sdk.metrics import Metrics
from edge_sdk.store import BundleStore

NAME = "digits-cnn"
KITCHEN = [f"pi-kitchen-{i:02d}" for i in range(10)]
GARAGE = ["jetson-garage-00", "jetson-garage-01"]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def key_of(device: str) -> str:
    return f"key-{device}-0123456789"


@dataclass
class Device:
    id: str
    store: BundleStore
    metrics: Metrics = field(default_factory=Metrics)

    def sync(self, url: str):
        with RegistryClient(url, api_key=key_of(self.id)) as client:
            (report,) = sync(client, self.store, names=[NAME])
        return report

    @property
    def active(self) -> str | None:
        (model,) = self.store.list()
        return model.active

    def serve(self, requests: int, errors: int = 0, fallbacks: int = 0) -> None:
        """Count requests as the daemon does: routes, and HTTP statuses."""
        self.metrics.inc("edge_route_total", requests - fallbacks, route="local", reason="default")
        self.metrics.inc("edge_route_total", fallbacks, route="cloud", reason="local_failed")
        self.metrics.inc("edge_requests_total", requests - errors, route="/v1/chat/completions", status="200")
        self.metrics.inc("edge_requests_total", errors, route="/v1/chat/completions", status="500")

    def report(self, url: str, *, ready: bool = True) -> dict:
        snapshot = {"models": {NAME: self.active}, "ready": ready, "counters": self.metrics.counters()}
        response = httpx.post(
            f"{url}/v1/telemetry",
            json={"items": [snapshot]},
            headers=auth(key_of(self.id)) | {"Idempotency-Key": uuid.uuid4().hex},
            timeout=30,
        )
        assert response.status_code == 202, response.text
        return response.json()


@pytest.fixture
def fleet(tmp_path, packed_versions, key_files, database_url):
    """A gateway whose registry has digits 1.0.0 on every device, 10 kitchen devices and 2 in the garage."""
    keys = tmp_path / "devices.txt"
    keys.write_text(
        "".join(f"{d} {key_of(d)} groups=kitchen\n" for d in KITCHEN)
        + "".join(f"{d} {key_of(d)} groups=garage\n" for d in GARAGE)
    )
    clock = Clock()
    config = gateway_config(key_files, tmp_path / "registry").model_copy(
        update={
            "devices": read_key_file(keys),
            "groups": read_device_groups(keys),
            "clock": clock,
            "database_url": database_url,
        }
    )
    with running_gateway(DirectorySource([]), config) as url:
        assert publish(url, packed_versions["1.0.0"]).status_code == 201
        devices = {d: Device(d, BundleStore(tmp_path / "stores" / d)) for d in KITCHEN + GARAGE}
        for device in devices.values():
            assert device.sync(url).outcome is Outcome.INSTALLED and device.active == "1.0.0"
        assert publish(url, packed_versions["1.1.0"]).status_code == 201
        yield url, devices, clock


def start(url: str, **spec) -> httpx.Response:
    body = {"model": NAME, "version": "1.1.0", "group": "kitchen", "stages": [20, 50, 100], "min_healthy": 0.9,
            "stage_wait_s": 600} | spec  # fmt: skip
    return httpx.post(f"{url}/v1/rollouts", json=body, headers=auth(PUBLISHER_KEY), timeout=30)


def rollout(url: str, rollout_id: int) -> dict:
    response = httpx.get(f"{url}/v1/rollouts/{rollout_id}", headers=auth(PUBLISHER_KEY), timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def sync_all(url: str, devices: dict[str, Device]) -> dict[str, Outcome]:
    return {d.id: d.sync(url).outcome for d in devices.values()}


def on(devices: dict[str, Device], version: str) -> set[str]:
    return {d.id for d in devices.values() if d.active == version}


def test_stage_members_are_stable_and_never_empty():
    devices = [f"d{i}" for i in range(20)]
    first = stage_members("m", devices, 5, given=[])
    assert len(first) == 1 and first <= stage_members("m", devices, 25, given=[])  # stages only grow
    assert stage_members("m", list(reversed(devices)), 5, given=[]) == first  # order of sight does not matter
    assert len(stage_members("m", devices[:3], 5, given=[])) == 1  # a small group still gets a canary
    assert stage_members("m", devices, 5, given=["x"]) == first | {"x"}  # who took it stays in
    assert stage_members("m", [], 50, given=[]) == set()


def test_rollout_advances_through_its_stages_on_healthy_reports(fleet):
    url, devices, _clock = fleet
    response = start(url)
    assert response.status_code == 201, response.text
    rid = response.json()["id"]
    kitchen = {d: devices[d] for d in KITCHEN}

    for share, expected in ((20, 2), (50, 5), (100, 10)):
        assert rollout(url, rid)["stage_percent"] == share
        sync_all(url, devices)
        assert len(on(kitchen, "1.1.0")) == expected  # exactly the stage's share of the group took it
        assert on(devices, "1.1.0") <= set(KITCHEN)  # never a device outside the group
        for device in kitchen.values():
            device.serve(requests=20)
            device.report(url)
    done = rollout(url, rid)
    assert done["state"] == "completed" and done["healthy"] >= 9  # --min-healthy 90 % of 10
    assert [d["action"] for d in done["decisions"]] == ["start", "advance", "advance", "complete"]
    assert all(devices[g].sync(url).outcome is Outcome.UP_TO_DATE for g in GARAGE)  # the garage keeps 1.0.0
    assert on(devices, "1.0.0") == set(GARAGE)

    metrics = httpx.get(f"{url}/metrics", headers=auth(PUBLISHER_KEY), timeout=30).text
    assert f'edge_rollout_decisions_total{{action="advance",model="{NAME}"}} 2' in metrics


def test_unhealthy_stage_aborts_and_its_devices_roll_back_on_sync(fleet):
    url, devices, _clock = fleet
    rid = start(url).json()["id"]
    sync_all(url, devices)
    canaries = sorted(on(devices, "1.1.0"))
    assert len(canaries) == 2
    devices[canaries[0]].serve(requests=50)
    devices[canaries[0]].report(url)
    assert rollout(url, rid)["state"] == "running"  # one of two healthy: 50 % < 90 %, the other may still come
    devices[canaries[1]].serve(requests=50, errors=10)  # 20 % errors > the default 5 %
    devices[canaries[1]].report(url)

    aborted = rollout(url, rid)
    assert aborted["state"] == "aborted" and "1/2 healthy at 20%" in aborted["reason"]
    assert any("error rate 20.0%" in r for r in aborted["device_reasons"])
    outcomes = sync_all(url, devices)
    assert {d for d, o in outcomes.items() if o is Outcome.ROLLED_BACK} == set(canaries)
    assert on(devices, "1.0.0") == set(devices)  # everyone runs the old version again
    assert all(o is Outcome.UP_TO_DATE for d, o in outcomes.items() if d not in canaries)
    # a device outside the stage that installs the version by hand is not counted, and is told so
    stray = devices[next(d for d in KITCHEN if d not in canaries)]
    listing = httpx.get(f"{url}/v1/registry/bundles", headers=auth(key_of(stray.id)), timeout=30).json()
    assert [e["version"] for e in listing["data"]] == ["1.0.0"]
    assert listing["withdrawn"][0]["version"] == "1.1.0"
    denied = httpx.get(f"{url}/v1/registry/bundles/{NAME}/1.1.0", headers=auth(key_of(stray.id)), timeout=30)
    assert denied.status_code == 404 and "staged rollout" in denied.json()["error"]["message"]


def test_silent_devices_count_unhealthy_after_the_stage_wait(fleet):
    url, devices, clock = fleet
    rid = start(url, stage_wait_s=600).json()["id"]
    sync_all(url, devices)
    clock.advance(599)
    assert rollout(url, rid)["state"] == "running"
    clock.advance(2)
    aborted = rollout(url, rid)
    assert aborted["state"] == "aborted" and "0/2 healthy" in aborted["reason"]
    assert all("did not report" in r for r in aborted["device_reasons"])


def test_a_report_of_a_version_not_given_is_flagged(fleet, packed_versions):
    url, devices, _clock = fleet
    start(url)
    outsider = devices[GARAGE[0]]
    outsider.store.install(packed_versions["1.1.0"])  # by hand, behind the rollout's back
    answer = outsider.report(url)
    assert answer["accepted"] == 1 and "which no rollout gave it" in answer["warnings"][0]


def test_pause_resume_abort_and_bad_requests_by_cli(fleet, key_files):
    url, devices, clock = fleet
    runner = CliRunner()
    common = ["--to", url, "--key-file", str(key_files["publisher"])]

    @dataclass
    class Result:
        exit_code: int
        output: str  # with the console's line wrapping undone

    def cli(*args: str) -> Result:
        result = runner.invoke(app, ["cloud", *args], catch_exceptions=False)
        return Result(result.exit_code, " ".join(result.output.split()))

    bad = cli("rollout", NAME, "9.9.9", "--group", "kitchen", *common)
    assert bad.exit_code != 0 and "digits-cnn 9.9.9 is not in the registry" in bad.output
    assert "published versions of digits-cnn: '1.0.0', '1.1.0'" in bad.output
    bad = cli("rollout", NAME, "1.1.0", "--group", "kitchen", "--stages", "5,50", *common)
    assert bad.exit_code != 0 and "must end at 100" in bad.output
    bad = cli("rollout", NAME, "1.1.0", "--group", "attic", *common)
    assert bad.exit_code != 0 and "no device is in group 'attic'" in bad.output

    ok = cli("rollout", NAME, "1.1.0", "--group", "kitchen", "--stages", "20,100", "--stage-wait", "5m", *common)
    assert ok.exit_code == 0 and "running at 20%" in ok.output
    overlap = cli("rollout", NAME, "1.1.0", "--group", "kitchen", *common)
    assert overlap.exit_code != 0 and "rollout 1 of digits-cnn 1.1.0 to group 'kitchen' is running" in overlap.output

    assert "paused" in cli("rollouts", "pause", "1", *common).output
    sync_all(url, devices)
    for device in devices.values():
        device.report(url)
    clock.advance(3600)  # paused: neither advances nor aborts, however long it waits
    table = cli("rollouts", *common)
    assert table.exit_code == 0 and "paused" in table.output
    resumed = cli("rollouts", "resume", "1", *common)
    assert "running" in resumed.output
    assert "aborted" in cli("rollouts", "abort", "1", "--reason", "field report", *common).output
    shown = cli("rollouts", "show", "1", *common).output
    for action in ("start", "pause", "resume", "abort at 20%: field report"):
        assert action in shown
    again = cli("rollouts", "abort", "1", *common)
    assert again.exit_code != 0 and "only a running or paused rollout can abort" in again.output

    devices_table = cli("devices", "--json", *common)
    assert '"pi-kitchen-00"' in devices_table.output
    assert "groups canary,kitchen" in cli("devices", "set-groups", KITCHEN[0], "kitchen,canary", *common).output
    refused = httpx.get(f"{url}/v1/rollouts", headers=auth(key_of(KITCHEN[0])), timeout=30)
    assert refused.status_code == 403  # a device key may not steer rollouts


def test_spec_refusals_name_what_is_valid():
    with pytest.raises(Exception, match="stages must increase"):
        RolloutSpec(NAME, "1.0.0", "g", stages=(50, 10, 100)).check()
    with pytest.raises(Exception, match="min-healthy 1.5"):
        RolloutSpec(NAME, "1.0.0", "g", min_healthy=1.5).check()


def test_the_fleet_page_shows_each_rollout_and_its_stage(fleet):
    url, devices, _clock = fleet
    rid = start(url).json()["id"]
    sync_all(url, devices)
    page = httpx.get(url, headers=auth(PUBLISHER_KEY), timeout=30)
    assert page.status_code == 200
    text = " ".join(page.text.split())
    assert 'id="rollouts"' in text and f"<td>{rid}</td>" in text
    assert "digits-cnn</strong> 1.1.0" in text and "running" in text and "20% of 20,50,100" in text


def test_a_version_published_with_hold_is_offered_only_through_a_rollout(fleet, packed_versions, key_files):
    url, devices, _clock = fleet
    common = ["--to", url, "--key-file", str(key_files["publisher"])]
    held = CliRunner().invoke(app, ["cloud", "publish", str(packed_versions["2.0.0"]), "--hold", *common])
    assert held.exit_code == 0 and "held: no device is offered it" in " ".join(held.output.split())

    sync_all(url, devices)  # 1.1.0 (published without --hold) is open to all; 2.0.0 to none
    assert on(devices, "1.1.0") == set(devices) and on(devices, "2.0.0") == set()
    device = key_of(KITCHEN[0])
    listing = httpx.get(f"{url}/v1/registry/bundles", headers=auth(device), timeout=30).json()
    assert [e["version"] for e in listing["data"]] == ["1.0.0", "1.1.0"]
    denied = httpx.get(f"{url}/v1/registry/bundles/{NAME}/2.0.0", headers=auth(device), timeout=30)
    assert denied.status_code == 404 and "is held for a staged rollout" in denied.json()["error"]["message"]
    publisher = httpx.get(f"{url}/v1/registry/bundles", headers=auth(PUBLISHER_KEY), timeout=30).json()
    assert publisher["held"] == [{"name": NAME, "version": "2.0.0"}]  # publishers see it, and that it is held
    assert len(publisher["data"]) == 3
    assert publish(url, packed_versions["2.0.0"]).status_code == 200  # the same bytes again: still held
    sync_all(url, devices)
    assert on(devices, "2.0.0") == set()

    assert start(url, version="2.0.0").status_code == 201  # the rollout opens it, stage by stage
    sync_all(url, devices)
    assert len(on(devices, "2.0.0")) == 2 and on(devices, "2.0.0") <= set(KITCHEN)  # 20 % of the kitchen
