"""Prompt reuse across requests and speculative decoding in the llama.cpp token loop, on the packaged SmolLM2:
both must leave the answer unchanged while skipping work."""

from __future__ import annotations

import pytest

from edge_sdk.errors import ConfigError

pytestmark = pytest.mark.slow

MANUAL = (
    "You are the help desk of the Lumen 3 desk lamp. Facts: the lamp has three brightness levels, set with the "
    "round button on its base. The colour temperature goes from 2700 K to 6500 K and is set with the slider on "
    "the arm. The lamp charges over USB-C in two hours and runs for ten hours on one charge at medium brightness. "
    "The warranty lasts two years from the date of purchase and covers the battery. To reset the lamp, hold the "
    "round button for ten seconds until the light blinks twice. Answer in one short sentence."
)
DOCUMENT = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named after "
    "the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889."
)


def _session(**options):
    from converters.gguf.zoo import smollm2_gguf_path
    from runtimes.base import SessionOptions
    from runtimes.llama_cpp_adapter import LlamaSession

    return LlamaSession(smollm2_gguf_path(), SessionOptions(threads=2, **options))


@pytest.fixture(scope="module")
def plain():
    # Room for one saved state of these prompts (~22 KiB a token): restoring one must not be undone by saving
    # the context it replaces (the benchmark found that: KeyError).
    session = _session(prompt_cache_mb=5)
    yield session
    session.close()


def _ask(session, system: str, question: str, **options) -> str:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    return "".join(session.chat(messages, temperature=0, max_tokens=options.pop("max_tokens", 12), **options))


def _shared_prefix(session, a: list[dict], b: list[dict]) -> int:
    tokens = [session._llm.tokenize(session.render_chat(m).encode(), add_bos=False, special=True) for m in (a, b)]
    return next((i for i, (x, y) in enumerate(zip(*tokens, strict=False)) if x != y), min(map(len, tokens)))


def test_a_shared_system_prompt_is_reused_across_interleaved_requests_with_the_same_answer(plain):
    first, second = "How long does the battery last?", "How do I reset the lamp?"
    _ask(plain, MANUAL, first)
    _ask(plain, "You are a poet.", "Write about the sea.")  # another conversation takes the context meanwhile
    answer = _ask(plain, MANUAL, second)
    shared = _shared_prefix(
        plain,
        [{"role": "system", "content": MANUAL}, {"role": "user", "content": first}],
        [{"role": "system", "content": MANUAL}, {"role": "user", "content": second}],
    )
    assert shared > 100  # the manual and the template around it
    assert plain.last_stats.cached_tokens == shared  # all of it restored, nothing of it evaluated again

    cold = _session(prompt_cache_mb=0)
    try:
        assert _ask(cold, MANUAL, second) == answer
        assert cold.last_stats.cached_tokens == 0
        _ask(cold, MANUAL, second)
        assert cold.last_stats.cached_tokens == 0  # off means off, even for the very same prompt
    finally:
        cold.close()


def test_prompt_lookup_drafting_keeps_the_answer_and_confirms_drafted_tokens(plain):
    spec = _session(speculative="prompt-lookup")
    try:
        messages = [{"role": "user", "content": f"{DOCUMENT}\n\nRepeat the text above exactly."}]
        greedy = "".join(plain.chat(messages, temperature=0, max_tokens=40))
        drafted = "".join(spec.chat(messages, temperature=0, max_tokens=40))
        assert drafted == greedy
        stats = spec.last_stats
        assert stats.accepted_tokens > 10 and stats.drafted_tokens >= stats.accepted_tokens
        # Every token is still sampled from the model's distribution, in order: a seed reproduces sampling too.
        sampled = ["".join(s.chat(messages, temperature=0.8, seed=7, max_tokens=24)) for s in (plain, spec)]
        assert sampled[0] == sampled[1]
    finally:
        spec.close()


def test_unknown_speculative_kind_is_refused_by_name():
    with pytest.raises(ConfigError, match="unknown speculative decoding 'medusa'; valid: \\['prompt-lookup'\\]"):
        _session(speculative="medusa")
