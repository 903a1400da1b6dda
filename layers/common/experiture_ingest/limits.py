"""The documented limits of the Experiture API, in one place.

Sources: Records API (000), Import Jobs API (001) and the Bulk File Import guide (003) in
``shared/api-docs``. Change a number here and every caller follows.

>>> from experiture_ingest.limits import BATCH_MAX_RECORDS
>>> BATCH_MAX_RECORDS
10000
"""

from __future__ import annotations

# Records API
BATCH_MAX_RECORDS = 10_000
BATCH_MAX_BYTES = 10 * 1024 * 1024
RECORD_MAX_FIELDS = 500

# Import Jobs API
IMPORT_MAX_FILE_BYTES = 50 * 1024**3
IMPORT_MAX_ROWS = 200_000_000
IMPORT_MAX_RUNNING_JOBS = 10
# How long a file may wait for a start slot (our queue, or the workspace's refusals) before it fails.
IMPORT_QUEUE_MAX_SECONDS = 7 * 24 * 3600
# An object store's single PUT (S3's limit): larger files need splitting.
SINGLE_PUT_MAX_BYTES = 5 * 1024**3
# Files larger than a part are split into row-aligned parts, each its own job (INTAKE_PART_MAX_BYTES).
PART_MAX_BYTES = 4 * 1024**3
PART_MIN_BYTES = 1024**2

# Polling cadences (seconds): start, growth factor, cap.
IMPORT_POLL = (5.0, 1.5, 60.0)
BATCH_JOB_POLL = (2.0, 1.5, 30.0)

# Idempotency keys are remembered by the API for this long.
IDEMPOTENCY_WINDOW_SECONDS = 24 * 3600
