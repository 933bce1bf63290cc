"""sesd test suite."""
