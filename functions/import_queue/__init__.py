"""The import queue's functions: enqueue, release, dispatch (see app.py)."""
