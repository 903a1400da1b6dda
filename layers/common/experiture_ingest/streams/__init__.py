"""The stream path: SQS messages in the contract, checked, packed into batch writes, and settled.

- :mod:`~experiture_ingest.streams.contract`: the message contract and the per-record limits.
- :mod:`~experiture_ingest.streams.destination`: the interface the writer and settler write through;
  :mod:`~experiture_ingest.streams.experiture` (with :mod:`~.schema`) implements it for Experiture.
- :mod:`~experiture_ingest.streams.writer`: one invocation, from its parts: :mod:`~.checking`,
  :mod:`~.packing`, :mod:`~.sending`, :mod:`~.tracking` (payloads, ledger, tickets) and :mod:`~.batch`
  (per-invocation state); :mod:`~.processing` turns a Lambda event into a partial batch response.
- :mod:`~experiture_ingest.streams.settle`: kept payloads, settle tickets, re-drives and reports.
- :mod:`~experiture_ingest.streams.deadletters`: the one dead-letter builder, the DLQ, and replay.
- :mod:`~experiture_ingest.streams.timing`: time budgets.
- :mod:`~experiture_ingest.streams.producer`: send records in the contract.
"""
