"""Test helpers for sesd: a local stand-in for the Amazon SES v2 API (`ses_standin`), and the
harness that runs sesd and the stand-in as subprocesses for tests and benches (`harness`)."""
