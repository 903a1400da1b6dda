"""Lambda's context object for running handlers in-process (local runners, demo, tests).

>>> ctx = LambdaContext.for_function("record-writer", timeout_seconds=120)
>>> ctx.invoked_function_arn, 119_000 < ctx.get_remaining_time_in_millis() <= 120_000
('arn:aws:lambda:us-east-1:123456789012:function:record-writer', True)
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field


@dataclass
class LambdaContext:
    """Enough of Lambda's context for Powertools and our handlers: name, ARN, request id, time left."""

    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    log_group_name: str = "/aws/lambda/local"
    log_stream_name: str = "local"
    deadline: float = field(default_factory=lambda: time.monotonic() + 900)

    @classmethod
    def for_function(cls, name: str, *, timeout_seconds: float = 900) -> LambdaContext:
        arn = f"arn:aws:lambda:us-east-1:123456789012:function:{name}"
        return cls(name, arn, deadline=time.monotonic() + timeout_seconds)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))
