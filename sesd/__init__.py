"""sesd: a self-hosted service that sends e-mail through Amazon SES v2 at an exact rate."""

__version__ = "0.1.0"
