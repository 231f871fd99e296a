"""Thin HTTP handlers. They parse and check the request, call the engine, and render."""
