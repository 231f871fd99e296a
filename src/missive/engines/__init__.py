"""Engines turn a validated conversation into internal events. They never see HTTP."""
