"""The stream path: SQS messages in the contract, checked, packed into batch writes, and settled.

- :mod:`~experiture_ingest.streams.contract`: the message contract (envelope, bare record + attributes,
  queue default) and its pydantic checks.
- :mod:`~experiture_ingest.streams.schema`: record checks against the object's cached schema.
- :mod:`~experiture_ingest.streams.packing`: grouping and packing into <= 10,000 records, <= 10 MB.
- :mod:`~experiture_ingest.streams.writer`: the batch writer (bisecting refusals, dead letters, retries).
- :mod:`~experiture_ingest.streams.settle`: kept payloads, settle tickets, re-drives and reports.
- :mod:`~experiture_ingest.streams.deadletters`: dead letters with reasons, and replay.
- :mod:`~experiture_ingest.streams.producer`: send records in the contract.
"""
