"""One Logger, Tracer and Metrics for every function, and a way for plain loggers to join them.

Handlers decorate with these; logic modules log through ``logging.getLogger(__name__)``, whose records
are formatted by Powertools as structured JSON once :func:`setup_logging` has run.

>>> from experiture_ingest.observability import metrics, NAMESPACE
>>> NAMESPACE
'ExperitureIngest'
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit

NAMESPACE = "ExperitureIngest"
SERVICE = "experiture-ingest"  # every metric's one dimension (service=experiture-ingest): see template.yaml

HandlerT = TypeVar("HandlerT", bound=Callable[..., Any])


class LazyTracer:
    """Powertools' Tracer, built on first use: building it loads the X-Ray SDK (about half of a
    handler's cold import), which only an invocation needs, not the import of the handler module.

    ``capture_lambda_handler`` decorates at import without building it; any other attribute
    (``put_annotation``, ``capture_method``...) builds it and is looked up on the real Tracer.
    """

    @functools.cached_property
    def real(self) -> Tracer:
        return Tracer(service=SERVICE)

    def capture_lambda_handler(self, handler: HandlerT) -> HandlerT:
        @functools.wraps(handler)
        def traced(event: Any, context: Any) -> Any:
            return self._traced(handler)(event, context)

        return traced  # type: ignore[return-value]

    @functools.cache  # noqa: B019 (one LazyTracer per process; handlers are module-level)
    def _traced(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        return self.real.capture_lambda_handler(handler)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


logger = Logger(service=SERVICE)
tracer = LazyTracer()
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


# The metrics of one HTTP answer, by kind: 2xx, 4xx, 429, 5xx.
_API_ANSWERS = ("ApiAnswers2xx", "ApiAnswers4xx", "ApiAnswers429", "ApiAnswers5xx")
_CRM_ANSWERS = ("CrmAnswers2xx", "CrmAnswers4xx", "CrmAnswers429", "CrmAnswers5xx")


def _count_answer(names: tuple[str, str, str, str], status: int) -> None:
    ok, client_error, throttled, server_error = names
    if status == 429:
        name = throttled
    elif status >= 500:
        name = server_error
    elif status >= 400:
        name = client_error
    else:
        name = ok
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)


def count_crm_answer(status: int) -> None:
    """One HTTP answer of the CRM: CrmAnswers2xx/4xx/429/5xx."""
    _count_answer(_CRM_ANSWERS, status)


def count_api_answer(status: int) -> None:
    """One HTTP answer of the API (or its token endpoint, or storage): ApiAnswers2xx/4xx/429/5xx."""
    _count_answer(_API_ANSWERS, status)
