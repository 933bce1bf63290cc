"""Test helpers for sesd: a local stand-in for the Amazon SES v2 API."""
