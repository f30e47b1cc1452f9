"""Grammar-constrained sampling in llama.cpp: an OutputConstraint becomes a GBNF grammar (llama-cpp-python's
JSON-Schema converter, the one `LlamaGrammar.from_json_schema` uses) and a grammar sampler in the chain.

The grammar is parsed by llama.cpp when its sampler is made; a grammar it cannot parse gives a NULL sampler (a
crash when used), so that is checked here and refused with a ConfigError instead.
"""

from __future__ import annotations

import json
import re
from typing import Any

from edge_sdk.errors import ConfigError
from runtimes.base import OutputConstraint

# Keywords llama-cpp-python's converter passes over without enforcing them: a schema using one is refused rather
# than answered with JSON that breaks it (an integer "maximum" came back as 1112222222222233).
UNENFORCED = (
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "uniqueItems", "minProperties",
    "maxProperties", "not", "if", "then", "else", "patternProperties", "propertyNames", "dependentRequired",
    "dependentSchemas", "dependencies", "contains", "minContains", "maxContains", "unevaluatedProperties",
    "unevaluatedItems",
)  # fmt: skip
FORMATS = ("date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5")


def unenforced(schema: Any, where: str = "schema") -> list[str]:
    """Where `schema` uses keywords the grammar cannot enforce ("schema.properties.age: maximum")."""
    if not isinstance(schema, dict):
        return []
    found = [f"{where}: {k}" for k in UNENFORCED if k in schema]
    if "format" in schema and schema["format"] not in FORMATS:
        found.append(f"{where}: format {schema['format']!r} (enforced: {', '.join(FORMATS[:4])})")
    for key in ("properties", "$defs", "definitions"):
        for name, sub in (schema.get(key) or {}).items() if isinstance(schema.get(key), dict) else ():
            found += unenforced(sub, f"{where}.{key}.{name}")
    for key in ("items", "additionalProperties"):
        found += unenforced(schema.get(key), f"{where}.{key}")
    for key in ("prefixItems", "anyOf", "oneOf", "allOf", "items"):
        for i, sub in enumerate(schema.get(key) or []) if isinstance(schema.get(key), list) else ():
            found += unenforced(sub, f"{where}.{key}[{i}]")
    return found


def gbnf(constraint: OutputConstraint) -> str:
    """The GBNF grammar of `constraint`: its JSON schema's grammar between the literal prefix and suffix."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    if found := unenforced(dict(constraint.schema)):
        raise ConfigError(
            f"the JSON schema uses keywords the grammar engine cannot enforce: {'; '.join(found[:5])}; "
            "drop them, or check them in your code after the answer"
        )
    try:
        body = json_schema_to_gbnf(json.dumps(dict(constraint.schema)))
    except Exception as exc:
        raise ConfigError(f"the JSON schema cannot be turned into a grammar: {type(exc).__name__}: {exc}") from None
    if not constraint.prefix and not constraint.suffix:
        return str(body)
    # The schema's own root becomes one rule of a root that adds the literal text around it.
    if not re.search(r"^root ::=", body, flags=re.M):
        raise ConfigError("the JSON schema's grammar has no root rule")
    inner = re.sub(r"^root ::=", "json-value-root ::=", body, count=1, flags=re.M)
    inner = re.sub(r"(?<![\w-])root(?![\w-])(?! ::=)", "json-value-root", inner)  # a schema referring to itself
    parts = [_literal(constraint.prefix), "json-value-root", _literal(constraint.suffix)]
    return "root ::= " + " ".join(p for p in parts if p) + "\n" + inner


def _literal(text: str) -> str:
    return json.dumps(text) if text else ""  # GBNF string literals escape as JSON strings do


def add_grammar(llm: Any, chain: Any, constraint: OutputConstraint) -> None:
    """Add the grammar sampler of `constraint` to `chain` (llama-cpp-python's LlamaSampler)."""
    import llama_cpp

    llama_cpp.llama_sampler_chain_add(chain.sampler, _grammar_sampler(llm, constraint))


def check_grammar(llm: Any, constraint: OutputConstraint) -> None:
    """Raise ConfigError when llama.cpp cannot follow `constraint` (parsing the grammar takes milliseconds)."""
    import llama_cpp

    llama_cpp.llama_sampler_free(_grammar_sampler(llm, constraint))


def _grammar_sampler(llm: Any, constraint: OutputConstraint) -> Any:
    import ctypes

    import llama_cpp

    text, root, vocab = gbnf(constraint).encode("utf-8"), b"root", llm._model.vocab
    if constraint.lazy:
        if not constraint.prefix:
            raise ConfigError("a lazy output constraint needs a prefix that triggers it")
        patterns = (ctypes.c_char_p * 1)(re.escape(constraint.prefix).encode("utf-8"))
        no_tokens = (llama_cpp.llama_token * 0)()
        sampler = llama_cpp.llama_sampler_init_grammar_lazy_patterns(vocab, text, root, patterns, 1, no_tokens, 0)
    else:
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, text, root)
    if not sampler:
        raise ConfigError("llama.cpp could not parse the grammar made from the JSON schema; simplify the schema")
    return sampler
