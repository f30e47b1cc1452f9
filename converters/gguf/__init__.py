"""LLMs to GGUF (llama.cpp): sources (.gguf, Hugging Face LLaMA directory), writer, quantizers, quality gate."""
