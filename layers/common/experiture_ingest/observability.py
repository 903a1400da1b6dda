"""One Logger, Tracer and Metrics for every function, and a way for plain loggers to join them.

Handlers decorate with these; logic modules log through ``logging.getLogger(__name__)``, whose records
are formatted by Powertools as structured JSON once :func:`setup_logging` has run.

>>> from experiture_ingest.observability import metrics, NAMESPACE
>>> NAMESPACE
'ExperitureIngest'
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

NAMESPACE = "ExperitureIngest"

logger = Logger(service="experiture-ingest")
tracer = Tracer(service="experiture-ingest")
metrics = Metrics(namespace=NAMESPACE, service="experiture-ingest")


def setup_logging() -> None:
    """Give the package's own loggers (the client's retries, for example) the Powertools format."""
    copy_config_to_registered_loggers(source_logger=logger, include={"experiture_ingest", "httpx"})
