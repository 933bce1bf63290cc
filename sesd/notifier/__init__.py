"""The notifier process: fans events out to webhook endpoints and delivers them, signed."""
