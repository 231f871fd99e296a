"""Missive: a self-hosted server that speaks the Anthropic Messages API."""

__version__ = "0.1.0"
