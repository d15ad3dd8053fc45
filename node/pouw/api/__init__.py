"""The node's HTTP API (FastAPI) and its client."""
