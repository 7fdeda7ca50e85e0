"""Bad input gets a 4xx JSON error from every service, the gateway included, and never a 500."""
from __future__ import annotations

import json

import pytest
import requests

from tests.integration.conftest import SERVICES, TEST_MAX_IMAGE_BYTES
from tests.serving.test_learner import png_header_claiming

CASES = {
    "empty": (b"", 400, "empty_body"),
    "text": (b"hello, this is not an image\n" * 4, 415, "unsupported_media_type"),
    "huge_dimensions": (png_header_claiming(30000, 30000), 413, "image_too_large"),
    "oversize_body": (b"\xff\xd8\xff" + b"\x00" * TEST_MAX_IMAGE_BYTES, 413, "payload_too_large"),
}


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_4xx_json(stack, service, case):
    data, status, code = CASES[case]
    resp = requests.post(stack.urls[service] + "/", data=data, timeout=60)
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["code"] == code and error["message"]


@pytest.mark.parametrize("service", SERVICES)
def test_truncated_jpeg_is_400(stack, jpeg, service):
    # the header is fine (the gateway's probe passes it), the pixel data is cut: the members' decoder says so
    resp = requests.post(stack.urls[service] + "/", data=jpeg[: len(jpeg) // 2], timeout=60)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == "corrupt_image"


@pytest.mark.parametrize("service", SERVICES)
def test_multipart_without_file_field_is_400(stack, jpeg, service):
    resp = requests.post(stack.urls[service] + "/", files={"photo": ("a.jpg", jpeg)}, timeout=60)
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "missing_file_field"


@pytest.mark.parametrize("service", ["ocr_nb", "stacking"])
def test_an_over_limit_body_gets_its_413_with_urllib_which_sends_it_all(stack, service):
    """urllib sends the whole body without Expect: 100-continue: the service reads and discards the rest (up to a
    bound and a time limit, a lingering close) so the client reads its 413 instead of a connection reset."""
    import urllib.error
    import urllib.request

    body = b"\xff\xd8\xff" + b"\x00" * (30 * 1024 * 1024)
    request = urllib.request.Request(stack.urls[service] + "/", data=body, method="POST",
                                     headers={"Content-Type": "application/octet-stream"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=60)
    assert caught.value.code == 413
    assert json.loads(caught.value.read())["error"]["code"] == "payload_too_large"


def test_an_over_limit_body_gets_its_413_over_a_raw_socket(stack):
    import socket as sockets
    from urllib.parse import urlsplit

    parts = urlsplit(stack.gateway_url)
    size = 30 * 1024 * 1024
    with sockets.create_connection((parts.hostname, parts.port), timeout=60) as sock:
        sock.sendall(f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n"
                     "Content-Type: application/octet-stream\r\n\r\n".encode())
        chunk = b"\x00" * (1024 * 1024)
        try:
            for _ in range(size // len(chunk)):
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may close once it has answered; the answer must still be readable
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
