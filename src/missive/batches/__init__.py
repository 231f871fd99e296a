"""Message batches: the API's operations on them (service.py) and the worker that runs them (worker.py)."""
