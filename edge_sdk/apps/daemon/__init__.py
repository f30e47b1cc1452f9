"""The device daemon: OpenAI-compatible and tensor APIs over installed bundles (FastAPI + uvicorn)."""
