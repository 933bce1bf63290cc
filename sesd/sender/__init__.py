"""The sender process: the single rate limiter, SES calls and their outcomes."""
