"""One Logger, Tracer and Metrics for every function, and a way for plain loggers to join them.

Handlers decorate with these; logic modules log through ``logging.getLogger(__name__)``, whose records
are formatted by Powertools as structured JSON once :func:`setup_logging` has run.

>>> from experiture_ingest.observability import metrics, NAMESPACE
>>> NAMESPACE
'ExperitureIngest'
"""

from __future__ import annotations

import logging

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit

NAMESPACE = "ExperitureIngest"
SERVICE = "experiture-ingest"  # every metric's one dimension (service=experiture-ingest): see template.yaml

logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)

# Libraries whose DEBUG output carries secrets: botocore logs every response body (a GetSecretValue
# answer holds the client secret) and request headers (the session token); httpcore and urllib3
# trace connections and headers. Their DEBUG lines are dropped even when the root logger is at DEBUG
# (Lambda's ApplicationLogLevel DEBUG sets it); INFO and above still pass.
CHATTY_LIBRARIES = ("botocore", "boto3", "s3transfer", "urllib3", "httpcore", "hpack")


def setup_logging() -> None:
    """Give the package's own loggers the Powertools format; keep secret-bearing DEBUG lines out."""
    copy_config_to_registered_loggers(source_logger=logger, include={"experiture_ingest", "httpx"})
    quiet_chatty_libraries()


def quiet_chatty_libraries() -> None:
    """No secret at any log level: the libraries in CHATTY_LIBRARIES never log below INFO.

    A level set on purpose is kept when it is already INFO or above (WARNING, say).
    """
    for name in CHATTY_LIBRARIES:
        library = logging.getLogger(name)
        if library.level < logging.INFO:  # NOTSET (inherits the root's level) or DEBUG
            library.setLevel(logging.INFO)


def count_api_answer(status: int) -> None:
    """One HTTP answer of the API (or its token endpoint, or storage): ApiAnswers2xx/4xx/429/5xx."""
    if status == 429:
        name = "ApiAnswers429"
    elif status >= 500:
        name = "ApiAnswers5xx"
    elif status >= 400:
        name = "ApiAnswers4xx"
    else:
        name = "ApiAnswers2xx"
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)
