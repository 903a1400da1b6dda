"""Fault injection: answer some requests with 429/500, add latency, or drop the connection.

A fault plan is JSON::

    {"seed": 7,
     "rules": [
       {"method": "POST", "path": "/public/v1/import-jobs", "status": 500, "times": 2},
       {"path": "/public/v1/records/*", "status": 429, "retryAfter": 3, "rate": 0.2},
       {"path": "/public/v1/*", "latencyMs": 250},
       {"method": "PUT", "path": "/uploads/*", "drop": "mid_body", "afterBytes": 65536, "times": 1},
       {"path": "/public/v1/import-jobs/*/start", "drop": "after_processing", "skip": 1, "times": 1}],
     "jobFailures": [{"kind": "batch", "times": 1, "errorMessage": "merge worker lost"}]}

``path`` is a shell-style pattern (fnmatch) matched against the path without the query string;
``method`` defaults to any. A rule fires on every match, on the next ``times`` matches (an exact
schedule, optionally after skipping ``skip`` matches), or with probability ``rate``. Latency rules add
their delay and let later rules apply (``"phase": "processing"`` delays an API call after its
Idempotency-Key is claimed, while it is "in progress", instead of before it is read; on the CRM
emulator's upsert, after its process is queued).
``drop`` closes the TCP connection without an answer:
``on_request`` before anything is read, ``mid_body`` after reading ``afterBytes`` of the body (nothing
is processed), ``after_processing`` once the request was fully handled (the work is done, the answer
is lost: what a client's retry with the same Idempotency-Key is for); the first status or drop rule
that fires decides the answer.
A status rule may name the ``code`` (and ``message``) of its answer: the API's error code in the
envelope, or the storage's ``<Code>`` on ``/uploads/`` and ``/error-files/`` (default there: 403
``AccessDenied``, 429/503 ``SlowDown``, 500 ``InternalError``).
``jobFailures`` make the next ``times`` batch or import jobs, or CRM processes (kind ``crm``),
optionally of one ``objectName`` (object type), end ``failed``. Admin routes (``/_sandbox/...``) are never faulted.
"""

from __future__ import annotations

import fnmatch
import random
import threading
from dataclasses import dataclass, field
from typing import Any

DROP_MODES = ("on_request", "mid_body", "after_processing")
# batch and import jobs of the Experiture emulator; crm: background processes of the CRM emulator
# (objectName is then the object type).
JOB_KINDS = ("batch", "import", "crm")


class FaultPlanError(ValueError):
    """A fault plan that cannot be used."""


@dataclass
class FaultRule:
    path: str = "*"
    method: str = "*"
    status: int | None = None
    retry_after: int | None = None
    code: str | None = None
    message: str | None = None
    latency_ms: float = 0.0
    drop: str | None = None
    after_bytes: int = 65536
    times: int | None = None
    skip: int = 0
    rate: float | None = None
    phase: str = "request"
    hits: int = 0
    seen: int = 0

    @classmethod
    def parse(cls, raw: Any, where: str) -> FaultRule:
        if not isinstance(raw, dict):
            raise FaultPlanError(f"{where}: a rule must be an object")
        known = {
            "path",
            "method",
            "status",
            "retryAfter",
            "code",
            "message",
            "latencyMs",
            "drop",
            "afterBytes",
            "times",
            "skip",
            "rate",
            "phase",
        }
        extra = set(raw) - known
        if extra:
            raise FaultPlanError(f"{where}: unknown keys {sorted(extra)}")
        rule = cls(
            path=str(raw.get("path", "*")),
            method=str(raw.get("method", "*")).upper(),
            status=raw.get("status"),
            retry_after=raw.get("retryAfter"),
            code=raw.get("code"),
            message=raw.get("message"),
            latency_ms=float(raw.get("latencyMs", 0) or 0),
            drop=raw.get("drop"),
            after_bytes=int(raw.get("afterBytes", 65536)),
            times=raw.get("times"),
            skip=int(raw.get("skip", 0)),
            rate=raw.get("rate"),
            phase=str(raw.get("phase", "request")),
        )
        if rule.phase not in ("request", "processing"):
            raise FaultPlanError(f"{where}: phase must be 'request' or 'processing'")
        actions = sum([rule.status is not None, rule.drop is not None, rule.latency_ms > 0])
        if actions != 1:
            raise FaultPlanError(f"{where}: give exactly one of status, drop, latencyMs")
        if rule.status is not None and not (isinstance(rule.status, int) and 400 <= rule.status <= 599):
            raise FaultPlanError(f"{where}: status must be an HTTP error status (400-599)")
        if (rule.code is not None or rule.message is not None) and rule.status is None:
            raise FaultPlanError(f"{where}: code and message go with a status")
        for name, value in (("code", rule.code), ("message", rule.message)):
            if value is not None and (not isinstance(value, str) or not value):
                raise FaultPlanError(f"{where}: {name} must be a non-empty string")
        if rule.drop is not None and rule.drop not in DROP_MODES:
            raise FaultPlanError(f"{where}: drop must be one of {DROP_MODES}")
        if rule.rate is not None and not (0 <= float(rule.rate) <= 1):
            raise FaultPlanError(f"{where}: rate must be between 0 and 1")
        if rule.times is not None and (not isinstance(rule.times, int) or rule.times < 0):
            raise FaultPlanError(f"{where}: times must be a non-negative integer")
        return rule

    def matches(self, method: str, path: str) -> bool:
        return (self.method in ("*", method)) and fnmatch.fnmatchcase(path, self.path)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "method": self.method}
        if self.status is not None:
            out["status"] = self.status
            if self.retry_after is not None:
                out["retryAfter"] = self.retry_after
            if self.code is not None:
                out["code"] = self.code
            if self.message is not None:
                out["message"] = self.message
        if self.latency_ms:
            out["latencyMs"] = self.latency_ms
            out["phase"] = self.phase
        if self.drop:
            out["drop"] = self.drop
            out["afterBytes"] = self.after_bytes
        if self.times is not None:
            out["times"] = self.times
        if self.skip:
            out["skip"] = self.skip
        if self.rate is not None:
            out["rate"] = self.rate
        out["hits"] = self.hits
        return out


@dataclass
class JobFailure:
    kind: str
    times: int = 1
    object_name: str | None = None
    error_message: str = "injected failure (sandbox fault plan)"

    @classmethod
    def parse(cls, raw: Any, where: str) -> JobFailure:
        if not isinstance(raw, dict) or raw.get("kind") not in JOB_KINDS:
            raise FaultPlanError(f"{where}: kind must be one of {JOB_KINDS}")
        return cls(
            kind=raw["kind"],
            times=int(raw.get("times", 1)),
            object_name=raw.get("objectName"),
            error_message=str(raw.get("errorMessage", cls.error_message)),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "times": self.times,
            "objectName": self.object_name,
            "errorMessage": self.error_message,
        }


@dataclass
class Decision:
    latency_ms: float = 0.0
    processing_latency_ms: float = 0.0
    status: int | None = None
    retry_after: int | None = None
    code: str | None = None
    message: str | None = None
    drop: str | None = None
    after_bytes: int = 0
    label: str | None = None


@dataclass
class FaultPlan:
    rules: list[FaultRule] = field(default_factory=list)
    job_failures: list[JobFailure] = field(default_factory=list)
    seed: int | None = None


def parse_plan(raw: Any) -> FaultPlan:
    if not isinstance(raw, dict):
        raise FaultPlanError("a fault plan must be a JSON object")
    extra = set(raw) - {"seed", "rules", "jobFailures"}
    if extra:
        raise FaultPlanError(f"unknown keys {sorted(extra)}")
    rules = raw.get("rules", [])
    failures = raw.get("jobFailures", [])
    if not isinstance(rules, list) or not isinstance(failures, list):
        raise FaultPlanError("rules and jobFailures must be lists")
    return FaultPlan(
        rules=[FaultRule.parse(r, f"rules[{i}]") for i, r in enumerate(rules)],
        job_failures=[JobFailure.parse(j, f"jobFailures[{i}]") for i, j in enumerate(failures)],
        seed=raw.get("seed"),
    )


class Faults:
    """The active plan; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plan = FaultPlan()
        self._random = random.Random()

    def replace(self, plan: FaultPlan) -> None:
        with self._lock:
            self._plan = plan
            self._random = random.Random(plan.seed)

    def extend(self, plan: FaultPlan) -> None:
        with self._lock:
            self._plan.rules.extend(plan.rules)
            self._plan.job_failures.extend(plan.job_failures)

    def clear(self) -> None:
        self.replace(FaultPlan())

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "seed": self._plan.seed,
                "rules": [r.to_dict() for r in self._plan.rules],
                "jobFailures": [j.to_dict() for j in self._plan.job_failures if j.times > 0],
            }

    def decide(self, method: str, path: str) -> Decision:
        decision = Decision()
        with self._lock:
            for rule in self._plan.rules:
                if not rule.matches(method, path):
                    continue
                rule.seen += 1
                if rule.seen <= rule.skip:
                    continue
                if rule.times is not None and rule.hits >= rule.times:
                    continue
                if rule.rate is not None and self._random.random() >= float(rule.rate):
                    continue
                rule.hits += 1
                if rule.latency_ms:
                    if rule.phase == "processing":
                        decision.processing_latency_ms += rule.latency_ms
                    else:
                        decision.latency_ms += rule.latency_ms
                    continue
                decision.status = rule.status
                decision.retry_after = rule.retry_after
                decision.code = rule.code
                decision.message = rule.message
                decision.drop = rule.drop
                decision.after_bytes = rule.after_bytes
                decision.label = f"drop:{rule.drop}" if rule.drop else f"status:{rule.status}"
                break
        return decision

    def take_job_failure(self, kind: str, object_name: str) -> str | None:
        """Consume one matching job failure; its error message, or None."""
        with self._lock:
            for failure in self._plan.job_failures:
                if failure.kind == kind and failure.times > 0 and failure.object_name in (None, object_name):
                    failure.times -= 1
                    return failure.error_message
        return None
