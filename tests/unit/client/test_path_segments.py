"""Every path segment is percent-encoded, and a name that would change the path sends nothing."""

from __future__ import annotations

import httpx
import pytest

from experiture_ingest.client import BearerToken, ExperitureClient, ExperitureError


class Recorder:
    def __init__(self) -> None:
        self.paths: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.raw_path.decode())
        data = {"objectName": "x", "primaryKey": "id", "fields": []}
        return httpx.Response(200, json={"success": True, "data": data, "correlationId": "c"})


def _client(recorder: Recorder) -> ExperitureClient:
    return ExperitureClient(
        "https://api.test/public/v1", BearerToken("t"), transport=httpx.MockTransport(recorder)
    )


@pytest.mark.parametrize("name", ["..", ".", ""])
def test_a_dot_segment_or_empty_name_is_refused_before_any_request(name):
    recorder = Recorder()
    with pytest.raises(ExperitureError, match="cannot be a path segment") as refused:
        _client(recorder).get_object_schema(name)
    assert refused.value.code == "CLIENT.PATH_SEGMENT_INVALID" and not refused.value.retryable
    assert recorder.paths == []


def test_slashes_spaces_and_control_characters_stay_inside_their_segment():
    recorder = Recorder()
    _client(recorder).get_object_schema("a/b ?\x01")
    assert recorder.paths == ["/public/v1/metadata/objects/a%2Fb%20%3F%01"]
