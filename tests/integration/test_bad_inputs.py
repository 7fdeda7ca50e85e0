"""Bad input gets a 4xx JSON error from every service, the gateway included, and never a 500."""
from __future__ import annotations

import pytest
import requests

from tests.integration.conftest import SERVICES, TEST_MAX_IMAGE_BYTES
from tests.serving.test_member import png_header_claiming

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
