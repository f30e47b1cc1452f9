"""Property-based requests from the daemon's own OpenAPI schema (schemathesis): none may get a 500.

The daemon serves the digits CNN and SmolLM2 on loopback; a hook points generated `model` names at them
half of the time, so requests reach the engines and not only the 404 path. 503 (no offline queue) and 504
(the request timeout, short here) are answers, not crashes; 500 is the failure this test looks for.
"""

from __future__ import annotations

import hypothesis
import pytest

schemathesis = pytest.importorskip("schemathesis")
st = pytest.importorskip("hypothesis.strategies")

pytestmark = pytest.mark.slow

MODELS = ["smollm2", "digits-cnn"]


@schemathesis.hook
def flatmap_body(context, body):
    if isinstance(body, dict) and isinstance(body.get("model"), str):
        return st.sampled_from([*MODELS, body["model"]]).map(lambda m: {**body, "model": m})
    return st.just(body)


@schemathesis.hook
def flatmap_path_parameters(context, path_parameters):
    if isinstance(path_parameters, dict) and "model" in path_parameters:
        return st.sampled_from([*MODELS, path_parameters["model"]]).map(lambda m: {**path_parameters, "model": m})
    return st.just(path_parameters)


@pytest.fixture(scope="module")
def daemon_schema(serve_bundles, onnx_bundle, smollm2_served_bundle):
    from edge_sdk.apps.daemon.pool import DirectorySource

    source = DirectorySource([smollm2_served_bundle.root, onnx_bundle.root])
    options = {"request_timeout_s": 3.0, "max_embedding_inputs": 8, "concurrency_per_model": 1}
    with serve_bundles(source, **options) as url:
        yield schemathesis.openapi.from_url(f"{url}/openapi.json")


def test_no_generated_request_gets_a_500(daemon_schema):
    # schemathesis' own pytest plugin fails on pytest 9 (`Function._nodeid`): drive hypothesis directly.
    operations = [result.ok() for result in daemon_schema.get_all_operations()]
    assert len(operations) >= 8, [op.label for op in operations]
    failures: list[str] = []
    for operation in operations:

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(
            max_examples=12, deadline=None, suppress_health_check=list(hypothesis.HealthCheck), database=None
        )
        def check(case) -> None:
            response = case.call(timeout=60)
            if response.status_code >= 500 and response.status_code not in (503, 504):
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}")
            elif response.status_code >= 400 and not case.path.startswith("/health"):
                # every refusal in the OpenAI error shape; health answers a status document (503 while models
                # preload or the daemon drains)
                assert set(response.json()["error"]) >= {"message", "type"}, response.text[:300]

        check()
    assert not failures, "\n".join(failures[:20])
