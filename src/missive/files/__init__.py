"""The Files API's storage: uploads parsed as they stream, bytes on disk, the operations (service.py)."""
