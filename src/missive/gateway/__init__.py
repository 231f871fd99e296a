"""Per-request policy: who is calling (auth); later rate limits, admission, usage and spend."""
