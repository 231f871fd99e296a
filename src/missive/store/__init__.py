"""Persistence. SQLite in the data directory by default, through SQLAlchemy."""
