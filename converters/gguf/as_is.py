"""Any GGUF llama.cpp loads, bundled as it is: no conversion, a golden set and a fit report from the file itself.

The header is read first (milliseconds, hostile counts refused); then llama.cpp itself must load the file, which
is what "any architecture" means here: whatever the device's llama.cpp runs.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from converters.gguf.evaluate import DEFAULT_EVAL_TOKENS, evaluation_text, logits_of, tokenize
from converters.gguf.exporter import _runtime
from converters.gguf.gguf_source import header_of
from device_profiles import DeviceProfile
from device_profiles.estimate import ModelFacts
from device_profiles.fit import check_fit
from device_profiles.gguf_header import FILE_TYPES
from edge_sdk import __version__
from edge_sdk.bundle import Bundle, BundleWriter, Recipe, SourceInfo
from edge_sdk.bundle.files import sha256_file
from edge_sdk.errors import ConfigError, ModelSourceError, RuntimeFailure
from edge_sdk.types import Backend, QuantScheme, Task
from runtimes.llama_cpp_adapter import CHAT_TEMPLATE_FILE

AS_IS = "as-is"
GOLDEN_TOKENS = 16


def wants_as_is(quantize: object) -> bool:
    """Whether a `quantize` argument asks for the file as it is ('as-is', alone)."""
    items = [quantize] if isinstance(quantize, str) else list(quantize) if isinstance(quantize, list | tuple) else []
    names = [str(q).strip().lower() for item in items for q in str(item).split(",") if str(q).strip()]
    if AS_IS in names and len(names) > 1:
        raise ConfigError(f"'{AS_IS}' keeps the file as it is; it cannot be combined with {names}")
    return names == [AS_IS]


def bundle_as_is(
    path: Path,
    output: Path,
    name: str,
    profiles: Sequence[DeviceProfile] = (),
    *,
    version: str = "1.0.0",
    overwrite: bool = False,
    threads: int | None = None,
    chat_template: str | None = None,
    progress: Callable[[str, str | None, int, int], None] | None = None,
) -> Bundle:
    """Bundle the GGUF at `path` unchanged, with 16 tokens of golden logits that `verify --run` re-checks.

    A `chat_template` goes beside the file (chat_template.jinja), which the llama.cpp session prefers."""
    report = progress or (lambda _s, _v, _d, _t: None)
    path = Path(path)
    if path.suffix != ".gguf" and not path.is_file():
        raise ModelSourceError(f"'{AS_IS}' bundles a .gguf file as it is; {str(path)!r} is not one")
    header = header_of(path)  # refuses a hostile or truncated header before llama.cpp parses anything
    arch = str(header.get("general.architecture", "<missing>"))
    file_type = int(header.get("general.file_type", -1))
    known = FILE_TYPES.get(file_type)
    scheme = QuantScheme(known) if known is not None else QuantScheme.NONE
    precision = known or f"llama.cpp file type {file_type}"
    variant_id = f"gguf-{(known or 'as-is').replace('_', '-')}"
    report("reference", None, 0, 1)
    try:
        tokens = tokenize(path, evaluation_text(), max_tokens=DEFAULT_EVAL_TOKENS)
    except RuntimeFailure as exc:
        raise ModelSourceError(f"llama.cpp cannot load this {arch!r} GGUF, so it cannot be bundled: {exc}") from None
    golden = tokens[:GOLDEN_TOKENS]
    writer = BundleWriter(
        name=name, version=version, task=Task.TEXT_GENERATION, created_by=f"edge-sdk {__version__}",
        source=SourceInfo(kind="gguf", digest="sha256:" + sha256_file(path), description=f"{path.name} ({arch})"),
    )  # fmt: skip
    try:
        report("verify", variant_id, 0, 1)
        golden_logits = logits_of(path, golden, threads=threads).logits
        writer.set_golden({"tokens": golden}, {"logits": golden_logits})
        facts = ModelFacts.of_files(Backend.GGUF, scheme, [path])
        files = {"model.gguf": path}
        if chat_template is not None:
            template_file = Path(tempfile.mkdtemp(prefix="edge-template-")) / CHAT_TEMPLATE_FILE
            template_file.write_text(chat_template, encoding="utf-8")
            files[CHAT_TEMPLATE_FILE] = template_file
        writer.add_variant(
            variant_id=variant_id, backend=Backend.GGUF, files=files, inputs=(), outputs=(),
            recipe=Recipe(quantization=scheme, precision=precision, options={"quantizer": AS_IS, "arch": arch}),
            runtime=_runtime(), fit={p.id: check_fit(p, facts) for p in profiles},
            golden_outputs={"logits": golden_logits},
        )  # fmt: skip
        report("write", None, 1, 1)
        return writer.write(output, overwrite=overwrite)
    finally:
        writer.discard()
