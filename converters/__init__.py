"""Host-side conversion: model sources, per-backend exporters, verifiers (output tensors; LLM logits over text),
and the one conversion loop that runs them (pipeline.convert).

Importing this package imports no engine; each exporter imports its own when it is first used.
"""
