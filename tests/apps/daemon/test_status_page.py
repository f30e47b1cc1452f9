"""The daemon's status page at `/`, opened in a real headless browser: what runs, which variant and why, the
route counts, the errors; the API key honoured (given once, then kept in a cookie) and a wrong key refused."""

from __future__ import annotations

import httpx
import pytest
from gateway_helpers import free_port  # tests/cloud_sync is on sys.path (tests/conftest.py)
from headless import fetches_nothing, section_rows, text_of

from edge_sdk.apps.daemon.pool import DirectorySource

slow = pytest.mark.slow  # a real daemon serving SmolLM2, and chromium started for each page

KEY = "status-page-key-0123456789"
TENSOR = {"dtype": "float32", "shape": [1, 1, 8, 8], "data": [0.0] * 64}
CHAT = {"model": "smollm2", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 3, "temperature": 0}


@pytest.fixture(scope="module")
def busy_daemon(serve_bundles, smollm2_served_bundle, onnx_bundle):
    """A daemon with a key, after a few requests: two served here, one the caller kept local, one asking for a
    cloud there is none of, one with a wrong key, and a tensor request to the digits model."""
    source = DirectorySource([smollm2_served_bundle.root, onnx_bundle.root])
    with serve_bundles(source, api_keys=frozenset({KEY})) as url:
        auth = {"Authorization": f"Bearer {KEY}"}
        with httpx.Client(base_url=url, timeout=120) as http:
            for _ in range(2):
                assert http.post("/v1/chat/completions", json=CHAT, headers=auth).status_code == 200
            assert http.post("/v1/chat/completions", json=CHAT, headers={**auth, "X-Edge-Route": "local"}).is_success
            asked_cloud = http.post("/v1/chat/completions", json=CHAT, headers={**auth, "X-Edge-Route": "cloud"})
            assert asked_cloud.status_code == 503
            wrong = http.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            infer = http.post("/v1/infer/digits-cnn", json={"inputs": {"input": TENSOR}}, headers=auth)
            assert infer.status_code == 200
            models = {m["id"]: m for m in http.get("/v1/models", headers=auth).json()["data"]}
        for bundle in (smollm2_served_bundle, onnx_bundle):
            models[bundle.name]["version"] = bundle.manifest.version
        yield url, models


@slow
def test_the_page_shows_models_variants_routes_and_errors(busy_daemon, browser, tmp_path):
    url, models = busy_daemon
    # the key once: a cookie, and on to the page
    dom = browser.dom(f"{url}/?key={KEY}", screenshot=tmp_path / "status.png")
    text = text_of(dom)
    assert text.startswith("edge-sdk on ") and "ready" in text
    rows = {row[0]: row for row in section_rows(dom, "models")}
    assert set(rows) == {"smollm2", "digits-cnn"}
    for name, entry in models.items():  # the variant the API reports, and why, shown as loaded
        _name, version, variant, engine, state, *_rest, why = rows[name]
        assert (version, variant, engine, state) == (entry["version"], entry["variant"], entry["backend"], "loaded")
        assert why == entry["variant_reason"] and why
    routes = {(r[0], r[1]): int(r[2]) for r in section_rows(dom, "routes")}
    assert routes == {("local", "default"): 2, ("local", "caller"): 1, ("reject", "no_cloud"): 1,
                      ("reject", "invalid"): 1}  # fmt: skip
    errors = section_rows(dom, "errors")
    assert [(e[1], e[2]) for e in errors[:2]] == [
        ("401", "POST /v1/chat/completions"),
        ("503", "POST /v1/chat/completions"),
    ]
    assert "missing or wrong API key" in errors[0][3] and "none is configured" in errors[1][3]
    assert all(e[0].endswith(" s ago") for e in errors)
    assert "budget for models" in text and "no cloud" in text and "refreshes every 5 s" in text
    assert 'http-equiv="refresh"' in dom and fetches_nothing(dom)


@slow
def test_a_wrong_or_missing_key_gets_the_form_and_nothing_else(busy_daemon, browser):
    url, _ = busy_daemon
    for address, problem in ((f"{url}/?key=not-the-key", "wrong key"), (f"{url}/", None)):
        text = text_of(browser.dom(address))
        assert "give one of its API keys" in text and "smollm2" not in text and "digits-cnn" not in text
        assert problem is None or problem in text
    assert httpx.get(f"{url}/?key=not-the-key").status_code == 401
    assert httpx.get(f"{url}/").status_code == 401


@slow
def test_the_key_is_kept_in_a_cookie_that_is_not_the_key(busy_daemon, browser, tmp_path):
    url, _ = busy_daemon
    profile = tmp_path / "one-browser"
    assert "smollm2" in text_of(browser.dom(f"{url}/?key={KEY}", profile=profile))
    later = browser.dom(f"{url}/", profile=profile)  # the same browser, another visit: no key given
    assert "smollm2" in text_of(later) and 'name="key"' not in later
    # The form posts the key; the cookie it sets opens the page, holds no key, and is no API key.
    signed_in = httpx.post(f"{url}/", data={"key": KEY})
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/"
    ((name, cookie),) = signed_in.cookies.items()
    assert KEY not in cookie and "httponly" in signed_in.headers["set-cookie"].lower()
    assert httpx.get(f"{url}/", cookies={name: cookie}).status_code == 200
    assert httpx.get(f"{url}/v1/models", cookies={name: cookie}).status_code == 401
    assert httpx.get(f"{url}/", cookies={name: KEY}).status_code == 401
    assert httpx.get(f"{url}/", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_without_api_keys_the_page_is_open_and_shows_a_model_not_loaded_yet(tensor_daemon, onnx_bundle):
    page = httpx.get(f"{tensor_daemon}/", timeout=60)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    row = next(r for r in section_rows(page.text, "models") if r[0] == "digits-cnn")
    assert row[1] == onnx_bundle.manifest.version and row[2] in {v.id for v in onnx_bundle.variants}
    assert row[4] in ("loaded", "not loaded") and (row[4] == "loaded" or row[5].endswith("once loaded"))
    assert httpx.post(f"{tensor_daemon}/", data={"key": "anything"}).status_code == 303  # nothing to sign in to


def test_a_failing_cloud_shows_as_an_open_breaker_with_the_routes_it_cost(serve_bundles, tmp_path):
    dead_cloud = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    options = dict(cloud_url=dead_cloud, cloud_retries=0, breaker_failures=1, queue_path=tmp_path / "q.sqlite")
    with serve_bundles(DirectorySource([]), **options, telemetry_interval_s=0) as url:
        ask = {"model": "elsewhere", "messages": [{"role": "user", "content": "hi"}]}
        assert httpx.post(f"{url}/v1/chat/completions", json=ask, timeout=30).status_code == 502  # the cloud is gone
        assert httpx.post(f"{url}/v1/chat/completions", json=ask, timeout=30).status_code == 503  # and now fails fast
        page = httpx.get(f"{url}/", timeout=30).text
    text = text_of(page)
    assert f"target {dead_cloud} circuit breaker open" in text and "Offline queue queued 0" in text
    routes = {(r[0], r[1]): r[2] for r in section_rows(page, "routes")}
    assert routes == {("cloud", "not_installed"): "1", ("reject", "breaker_open"): "1"}
    assert [e[1] for e in section_rows(page, "errors")] == ["503", "502"]
