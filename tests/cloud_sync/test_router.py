"""The routing decision for every reason, on the facts the daemon measures (the daemon tests run them for real)."""

from __future__ import annotations

import pytest

from cloud_sync.breaker import CircuitBreaker
from cloud_sync.router import CallerChoice, LocalFacts, PrivacyPolicy, Reason, Route, Router
from edge_sdk.errors import InputError

FITS = LocalFacts(installed=True, context_limit=2048, prompt_tokens=100, max_tokens=256)
AUTO, LOCAL, CLOUD = CallerChoice.AUTO, CallerChoice.LOCAL, CallerChoice.CLOUD


def router(**options) -> Router:
    return Router(cloud_configured=True, slo_s=0.5, **options)


@pytest.mark.parametrize(
    ("facts", "reason"),
    [
        (LocalFacts(installed=False), Reason.NOT_INSTALLED),
        (LocalFacts(installed=True, fits_memory=False), Reason.NO_MEMORY),
        (LocalFacts(installed=True, context_limit=2048, prompt_tokens=1900, max_tokens=256), Reason.CONTEXT),
        (LocalFacts(installed=True, estimated_wait_s=0.8), Reason.SLO),
    ],
)
def test_each_reason_sends_to_the_cloud(facts, reason):
    decision = router().decide("m", facts)
    assert (decision.route, decision.reason) == (Route.CLOUD, reason)
    assert decision.detail


def test_a_request_that_fits_stays_local():
    assert router().decide("m", FITS).route is Route.LOCAL
    assert router().decide("m", FITS).reason is Reason.DEFAULT
    assert "2048" in router().decide("m", LocalFacts(installed=True, context_limit=2048, prompt_tokens=2000,
                                                       max_tokens=100)).detail  # fmt: skip


def test_without_a_cloud_everything_is_local_as_before():
    plain = Router(cloud_configured=False)
    for facts in (LocalFacts(installed=False), LocalFacts(installed=True, fits_memory=False)):
        assert plain.decide("m", facts).route is Route.LOCAL  # the daemon's own 404 / load answers it
    refused = plain.decide("m", FITS, CLOUD)
    assert (refused.route, refused.reason, refused.status) == (Route.REJECT, Reason.NO_CLOUD, 503)


def test_caller_header_wins_over_the_facts():
    assert router().decide("m", LocalFacts(installed=False), LOCAL).route is Route.LOCAL
    decision = router().decide("m", FITS, CLOUD)
    assert (decision.route, decision.reason) == (Route.CLOUD, Reason.CALLER)
    with pytest.raises(InputError, match=r"'auto', 'local', 'cloud'"):
        CallerChoice.parse("edge")
    assert CallerChoice.parse(None) is AUTO and CallerChoice.parse(" Cloud ") is CLOUD


def test_privacy_serves_locally_or_refuses_never_cloud():
    private = router(privacy=PrivacyPolicy(frozenset({"secret"})))
    slow = LocalFacts(installed=True, estimated_wait_s=5.0)
    assert (private.decide("secret", slow).route, private.decide("secret", slow).reason) == (
        Route.LOCAL,
        Reason.PRIVACY,
    )
    assert private.decide("other", slow).route is Route.CLOUD
    long = LocalFacts(installed=True, context_limit=2048, prompt_tokens=4000)
    for facts, caller, status in [(long, AUTO, 400), (LocalFacts(installed=False), AUTO, 404), (FITS, CLOUD, 403)]:
        decision = private.decide("secret", facts, caller)
        assert (decision.route, decision.reason, decision.status) == (Route.REJECT, Reason.PRIVACY, status)
    assert private.after_local_failure("secret", Reason.LOCAL_FAILED, "boom", AUTO) is None
    everything = router(privacy=PrivacyPolicy(frozenset({"all"})))
    assert everything.decide("any", LocalFacts(installed=False)).route is Route.REJECT


def test_an_open_breaker_keeps_possible_work_local_and_fails_the_rest_fast():
    breaker = CircuitBreaker(failure_threshold=1, reset_after_s=60)
    breaker.record_failure()
    r = router(breaker=breaker)
    slow = r.decide("m", LocalFacts(installed=True, estimated_wait_s=5.0))
    assert (slow.route, slow.reason) == (Route.LOCAL, Reason.BREAKER_OPEN)
    absent = r.decide("m", LocalFacts(installed=False))
    assert (absent.route, absent.reason, absent.status) == (Route.REJECT, Reason.BREAKER_OPEN, 503)
    assert 59 < absent.retry_after_s <= 60  # type: ignore[operator]
    assert r.after_local_failure("m", Reason.LOCAL_FAILED, "boom", AUTO) is None


def test_local_failure_goes_to_the_cloud_unless_the_caller_said_local():
    retry = router().after_local_failure("m", Reason.LOCAL_FAILED, "engine crashed", AUTO)
    assert retry is not None and (retry.route, retry.reason) == (Route.CLOUD, Reason.LOCAL_FAILED)
    assert router().after_local_failure("m", Reason.LOCAL_FAILED, "engine crashed", LOCAL) is None


def test_daemon_settings_name_a_bad_cloud_option(tmp_path):
    from edge_sdk.apps.daemon.config import daemon_config
    from edge_sdk.apps.daemon.server import read_cloud_key
    from edge_sdk.errors import ConfigError

    with pytest.raises(ConfigError, match="cloud_url"):
        daemon_config(cloud_url="ftp://cloud")
    with pytest.raises(ConfigError, match="slo_ms"):
        daemon_config(slo_ms=-1)
    keys = tmp_path / "cloud.key"
    keys.write_text("# this device\nkey-1\n")
    assert read_cloud_key(keys) == "key-1"
    keys.write_text("key-1\nkey-2\n")
    with pytest.raises(ConfigError, match="exactly one key"):
        read_cloud_key(keys)
