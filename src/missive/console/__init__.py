"""The web console (docs/console.md): server-rendered pages over the Admin API's operations
(gateway/admin.py), the batches service and the pipeline; sessions and CSRF in `sessions`."""
