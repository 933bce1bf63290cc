"""The HTTP API in process, by concern."""
