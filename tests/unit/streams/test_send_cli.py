"""``experiture-ingest send``: the whole file is checked first, errors are one line, a resume queues nothing twice."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

import cli.streams
from cli.main import main


@pytest.fixture
def queue(monkeypatch) -> Iterator[str]:
    for k, v in {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
    }.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        yield boto3.client("sqs").create_queue(QueueName="records")["QueueUrl"]


def _send(path, queue: str, *extra: str) -> int:
    return main(
        ["send", str(path), "--queue-url", queue, "--object", "contacts", "--operation", "upsert", *extra]
    )


def _queued(queue: str) -> list[str]:
    """The emails of every record on the queue (messages are left there)."""
    sqs = boto3.client("sqs")
    emails: list[str] = []
    seen: dict[str, str] = {}
    while True:
        got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, VisibilityTimeout=300).get(
            "Messages", []
        )
        fresh = [m for m in got if m["MessageId"] not in seen]
        if not fresh:
            break
        for m in fresh:
            seen[m["MessageId"]] = m["ReceiptHandle"]
            emails.extend(r["email"] for r in json.loads(m["Body"])["records"])
    for receipt in seen.values():
        sqs.change_message_visibility(QueueUrl=queue, ReceiptHandle=receipt, VisibilityTimeout=0)
    return emails


def _one_line_error(err: str) -> str:
    assert "Traceback" not in err
    [line] = err.strip().splitlines()
    assert line.startswith("error: ")
    return line


def _lines(n: int) -> list[str]:
    return [json.dumps({"email": f"u{i}@example.com", "tier": "gold" * 20}) for i in range(n)]


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (
            b'{"email": "a@x.io"}\n{"email": "b\xff@x.io"}\n',
            "line 2 is not UTF-8 text (byte 0xff at column 13)",
        ),
        (
            b'{"email": "a@x.io"}\n{"email": ' + b"[" * 5000 + b"]" * 5000 + b"}\n",
            "line 2: values nest deeper than 32",
        ),
        (b'{"email": "a@x.io", "first_name": "\\ud800"}\n', "line 1: a string holds '\\ud800'"),
        (b'{"email": "a@x.io", "age": ' + b"9" * 400 + b"}\n", "STREAM.NUMBER_OUT_OF_RANGE"),
    ],
)
def test_a_file_with_a_bad_line_sends_nothing_and_says_which(tmp_path, queue, capsys, content, says):
    path = tmp_path / "records.jsonl"
    path.write_bytes(content)
    # When sent, then the exit status says the file is bad, in one line naming the line, and nothing is queued
    assert _send(path, queue) == 3
    line = _one_line_error(capsys.readouterr().err)
    assert says in line and line.endswith("nothing was sent")
    assert _queued(queue) == []


def test_a_bad_line_late_in_a_big_file_sends_nothing_and_the_fixed_file_is_sent_once(tmp_path, queue, capsys):
    # Given 20,000 records whose line 15,001 is not JSON
    lines = _lines(20_000)
    good = lines[15_000]
    lines[15_000] = "{oops"
    path = tmp_path / "big.jsonl"
    path.write_text("\n".join(lines) + "\n")
    # When sent, then nothing is queued and the error names line 15001
    assert _send(path, queue) == 3
    assert "line 15001: not JSON" in _one_line_error(capsys.readouterr().err)
    assert _queued(queue) == []
    # When the user fixes the line and sends again, then every record is queued exactly once
    lines[15_000] = good
    path.write_text("\n".join(lines) + "\n")
    assert _send(path, queue) == 0
    queued = _queued(queue)
    assert len(queued) == 20_000 and len(set(queued)) == 20_000


def test_a_send_that_fails_partway_says_how_to_resume_and_the_resume_queues_nothing_twice(
    tmp_path, queue, capsys, monkeypatch
):
    # Given 20,000 records and an SQS that fails for good after 3 SendMessageBatch calls
    path = tmp_path / "big.jsonl"
    path.write_text("\n".join(_lines(20_000)) + "\n")
    real = boto3.client

    def flaky(*args, **kwargs):
        client = real(*args, **kwargs)
        calls = [0]
        send = client.send_message_batch

        def send_message_batch(**params):
            calls[0] += 1
            if calls[0] > 3:
                raise ClientError(
                    {"Error": {"Code": "ServiceUnavailable", "Message": "down"}}, "SendMessageBatch"
                )
            return send(**params)

        client.send_message_batch = send_message_batch
        return client

    monkeypatch.setattr(cli.streams.boto3, "client", flaky)
    # When sent, then the exit status says it stopped partway, and the message says how to resume
    assert _send(path, queue) == 1
    line = _one_line_error(capsys.readouterr().err)
    found = re.search(
        r"(\d+) record\(s\) were queued \(lines 1 to (\d+)\); re-run with --start-line (\d+)", line
    )
    assert found, line
    queued, last, resume = (int(g) for g in found.groups())
    assert 0 < queued < 20_000 and last == queued and resume == last + 1
    assert len(_queued(queue)) == queued
    # When the user follows the message (SQS is back), then every record is queued exactly once
    monkeypatch.setattr(cli.streams.boto3, "client", real)
    assert _send(path, queue, "--start-line", str(resume)) == 0
    emails = _queued(queue)
    assert len(emails) == 20_000 and len(set(emails)) == 20_000
