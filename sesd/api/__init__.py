"""The HTTP API process: the aiohttp application, its handlers and input validation."""
