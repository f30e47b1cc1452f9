"""The llama.cpp runtime on the packaged SmolLM2 GGUF: streaming, options, chat templates in a sandbox, embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from edge_sdk.errors import BundleError, ConfigError, InputError, UnsupportedOperationError

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def smol_bundle(tmp_path_factory):
    """The packaged Q4_1 file as it is, in a one-variant bundle (no conversion: that is tested elsewhere)."""
    from converters.gguf.exporter import _runtime
    from converters.gguf.zoo import smollm2_gguf_path
    from edge_sdk.bundle import BundleWriter, Recipe, SourceInfo
    from edge_sdk.types import Backend, QuantScheme, Task

    path = smollm2_gguf_path()
    writer = BundleWriter(
        name="smollm2", version="1.0.0", task=Task.TEXT_GENERATION, created_by="test",
        source=SourceInfo(kind="gguf", digest="sha256:" + "0" * 64),
    )  # fmt: skip
    writer.add_variant(
        variant_id="gguf-q4-1", backend=Backend.GGUF, files={"model.gguf": path}, inputs=(), outputs=(),
        recipe=Recipe(quantization=QuantScheme.Q4_1, precision="q4_1"), runtime=_runtime(),
    )  # fmt: skip
    return writer.write(tmp_path_factory.mktemp("rt") / "smol")


@pytest.fixture(scope="module")
def session(smol_bundle):
    from edge_sdk.api import load

    with load(smol_bundle, threads=2) as s:
        yield s


def test_load_is_measured(session):
    assert session.stats.load_seconds > 0
    assert session.inputs == () and session.outputs == ()


@pytest.mark.slow
def test_generate_streams_paris_and_records_speed(session):
    pieces = list(session.generate(PROMPT, max_tokens=12, temperature=0))
    assert len(pieces) > 3 and "Paris" in "".join(pieces)
    stats = session.last_stats
    assert stats.prompt_tokens == 5 and 1 < stats.generated_tokens <= 12
    # Recorded, not judged: speed is for benchmarks/llm_decode.py on a quiet machine.
    assert 0 < stats.time_to_first_token_s <= stats.total_s and stats.tokens_per_second > 0


def test_stop_sequence_ends_generation(session):
    text = "".join(session.generate(PROMPT, max_tokens=24, temperature=0, stop=["."]))
    assert "Paris" in text and "." not in text


def test_seed_makes_sampling_repeatable(session):
    runs = ["".join(session.generate("Once upon a time", max_tokens=16, temperature=1.0, top_k=50, seed=s))
            for s in (7, 7, 8)]  # fmt: skip
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_chat_uses_the_models_template(session):
    rendered = session.render_chat([{"role": "user", "content": "Hi"}])
    assert rendered.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France? Answer in one word."},
    ]
    reply = "".join(session.chat(messages, max_tokens=16, temperature=0))
    assert "Paris" in reply and "<|im_end|>" not in reply


def test_embed_returns_one_vector_per_text(session):
    vectors = session.embed(["The cat sat on the mat.", "A cat was sitting on a mat.", "Stock prices fell."])
    assert vectors.shape == (3, 576) and np.isfinite(vectors).all()
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    assert unit[0] @ unit[1] > unit[0] @ unit[2]


def test_tensor_run_is_refused_clearly(session):
    with pytest.raises(UnsupportedOperationError, match="language model: use generate"):
        session.run({"input": np.zeros(1, dtype=np.float32)})


def test_bad_options_name_the_valid_ones(session):
    with pytest.raises(ConfigError, match=r"unknown generation options \['temprature'\]; valid: .*'temperature'"):
        session.generate(PROMPT, temprature=0.5)
    with pytest.raises(ConfigError, match="top_p must be in"):
        session.generate(PROMPT, top_p=1.5)
    with pytest.raises(InputError, match="exceeds the context"):
        session.generate(PROMPT, max_tokens=10**6)
    with pytest.raises(InputError, match="'role' and 'content'"):
        session.render_chat([{"text": "hi"}])


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ messages.__class__ }}",
        "{% set x = messages.append({'role': 'user', 'content': 'x'}) %}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    ],
)
def test_sandbox_escaping_template_fails_safely(template):
    from runtimes.llama_cpp_adapter import render_chat_template

    with pytest.raises(BundleError, match="chat template"):
        render_chat_template(template, [{"role": "user", "content": "hi"}])


def test_template_raise_exception_is_reported():
    from runtimes.llama_cpp_adapter import render_chat_template

    with pytest.raises(BundleError, match="roles must alternate"):
        render_chat_template("{{ raise_exception('roles must alternate') }}", [])


def test_loading_in_threads_leaves_the_process_output_alone(smol_bundle):
    # llama-cpp-python's verbose=False swapped sys.stdout/sys.stderr for /dev/null during a load, from whatever
    # thread loaded: the daemon preloading a model silenced (or, racing, lost) every other thread's output.
    import os
    import sys
    import threading

    from edge_sdk.api import load

    streams, fds = (sys.stdout, sys.stderr), [os.fstat(fd)[:2] for fd in (1, 2)]
    swapped: list[str] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if (sys.stdout, sys.stderr) != streams:
                swapped.append(repr(sys.stdout))
                return

    def load_twice() -> None:
        for _ in range(2):
            load(smol_bundle, threads=1).close()

    watcher = threading.Thread(target=watch)
    loaders = [threading.Thread(target=load_twice) for _ in range(3)]
    watcher.start()
    for t in loaders:
        t.start()
    for t in loaders:
        t.join()
    done.set()
    watcher.join()
    assert swapped == [], f"another thread saw sys.stdout replaced by {swapped[0]}"
    assert (sys.stdout, sys.stderr) == streams
    assert [os.fstat(fd)[:2] for fd in (1, 2)] == fds  # descriptors 1 and 2 point where they did


def test_a_load_logs_without_taking_the_gil(smol_bundle):
    # llama-cpp-python logs through a Python callback: every line of a load then waited for the GIL, and a load
    # beside a busy thread (the daemon importing its web stack, or serving) took 2-5 s instead of 0.15 s. While
    # a load runs silenced, llama.cpp logs through its own C logger; the Python callback is back afterwards.
    import ctypes

    import llama_cpp
    from llama_cpp import _logger

    from edge_sdk.api import load

    calls: list[bytes] = []

    @llama_cpp.llama_log_callback
    def counting(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        calls.append(text)

    installed = _logger.llama_log_callback
    _logger.llama_log_callback = counting  # what the silenced sections restore
    llama_cpp.llama_log_set(counting, ctypes.c_void_p(0))
    try:
        session = load(smol_bundle, threads=1)
        assert calls == [], f"the load logged {len(calls)} lines through Python, e.g. {calls[0]!r}"
        session.close()
        now, user_data = llama_cpp.llama_log_callback(), ctypes.c_void_p()
        llama_cpp.llama_log_get(ctypes.byref(now), ctypes.byref(user_data))
        assert ctypes.cast(now, ctypes.c_void_p).value == ctypes.cast(counting, ctypes.c_void_p).value
    finally:
        _logger.llama_log_callback = installed
        llama_cpp.llama_log_set(installed, ctypes.c_void_p(0))
