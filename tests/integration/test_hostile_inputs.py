"""A corpus of odd and hostile inputs, on every port, through three real HTTP clients (requests, urllib, curl).

Odd but valid images get a 200 with probabilities; everything else a 4xx with a JSON error whose code names the
problem. Never a 500, a reset or a hang. The corpus is made here, in memory: nothing is read from the datasets.
"""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from tests.integration.conftest import SERVICES, TEST_MAX_IMAGE_BYTES, jpeg_bytes
from tests.serving.test_learner import png_header_claiming

OK = "ok"  # a 200 with probabilities


@dataclass(frozen=True)
class Case:
    body: bytes
    expect: str  # OK, or the error code of the 4xx
    status: int = 200
    content_type: str = "application/octet-stream"
    multipart_field: str | None = None  # sent as multipart/form-data in this field instead of a raw body


def _save(img: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **kwargs)
    return out.getvalue()


def _textured(mode: str = "RGB", size: tuple[int, int] = (40, 32)) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees on display
    return _save(_textured(), "JPEG", exif=exif.tobytes())


def _animated_gif() -> bytes:
    frames = [_textured("P"), _textured("P").transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("photo.jpg", jpeg_bytes())
    return out.getvalue()


def corpus() -> dict[str, Case]:
    jpeg = jpeg_bytes()
    return {
        # odd but valid: answered
        "png_rgba": Case(_save(_textured("RGBA"), "PNG"), OK),
        "png_1x1": Case(_save(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"), OK),
        "png_16bit_gray": Case(_save(Image.fromarray(np.arange(0, 65535, 64, dtype=np.uint16).reshape(32, 32)),
                                     "PNG"), OK),
        "jpeg_grayscale": Case(_save(_textured("L"), "JPEG"), OK),
        "jpeg_cmyk": Case(_save(_textured("CMYK"), "JPEG"), OK),
        "jpeg_exif_rotated": Case(_exif_rotated(), OK),
        "jpeg_progressive": Case(_save(_textured(), "JPEG", progressive=True), OK),
        "gif_animated": Case(_animated_gif(), OK),
        "bmp": Case(_save(_textured(), "BMP"), OK),
        "webp": Case(_save(_textured(), "WEBP"), OK),
        "tiff": Case(_save(_textured(), "TIFF"), OK),
        "jpeg_labelled_text_plain": Case(jpeg, OK, content_type="text/plain"),
        "jpeg_labelled_json": Case(jpeg, OK, content_type="application/json"),
        "multipart_jpeg": Case(jpeg, OK, multipart_field="file"),
        # hostile or wrong: a 4xx that says why
        "empty": Case(b"", "empty_body", 400),
        "multipart_empty_file": Case(b"", "empty_body", 400, multipart_field="file"),
        "multipart_wrong_field": Case(jpeg, "missing_file_field", 400, multipart_field="photo"),
        "text": Case(b"hello, this is not an image\n" * 4, "unsupported_media_type", 415, "text/plain"),
        "html": Case(b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>",
                     "unsupported_media_type", 415, "text/html"),
        "svg": Case(b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/>'
                    b"</svg>", "unsupported_media_type", 415, "image/svg+xml"),
        "zip_with_a_jpeg_inside": Case(_zip(), "unsupported_media_type", 415, "application/zip"),
        "random_bytes": Case(np.random.default_rng(1).bytes(4096), "unsupported_media_type", 415),
        "ico_not_supported": Case(_save(_textured(size=(32, 32)), "ICO"), "unsupported_media_type", 415),
        "jpeg_truncated": Case(jpeg[: len(jpeg) // 2], "corrupt_image", 400),
        "jpeg_magic_then_html": Case(b"\xff\xd8\xff\xe0" + b"<html>" * 200, "corrupt_image", 400),
        "png_bomb_header_30000x30000": Case(png_header_claiming(30000, 30000), "image_too_large", 413),
        "oversize_body": Case(b"\xff\xd8\xff" + b"\x00" * TEST_MAX_IMAGE_BYTES, "payload_too_large", 413),
    }


CORPUS = corpus()


@dataclass
class Answer:
    status: int
    body: dict


def _multipart(field: str, data: bytes) -> tuple[bytes, str]:
    boundary = "hostile-corpus-boundary"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="x.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n").encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def send_requests(url: str, case: Case, tmp: Path) -> Answer:
    if case.multipart_field:
        resp = requests.post(url, files={case.multipart_field: ("x.jpg", case.body, "image/jpeg")}, timeout=60)
    else:
        resp = requests.post(url, data=case.body, headers={"Content-Type": case.content_type}, timeout=60)
    return Answer(resp.status_code, resp.json())


def send_urllib(url: str, case: Case, tmp: Path) -> Answer:
    data, content_type = (_multipart(case.multipart_field, case.body) if case.multipart_field
                          else (case.body, case.content_type))
    request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return Answer(resp.status, json.loads(resp.read()))
    except urllib.error.HTTPError as err:
        return Answer(err.code, json.loads(err.read()))


def send_curl(url: str, case: Case, tmp: Path) -> Answer:
    source, out = tmp / "body", tmp / "answer"
    source.write_bytes(case.body)
    form = (["-F", f"{case.multipart_field}=@{source};filename=x.jpg;type=image/jpeg"] if case.multipart_field
            else ["--data-binary", f"@{source}", "-H", f"Content-Type: {case.content_type}"])
    status = subprocess.run(["curl", "-sS", "--max-time", "60", "-o", str(out), "-w", "%{http_code}", *form, url],
                            capture_output=True, text=True, timeout=90, check=True).stdout
    return Answer(int(status), json.loads(out.read_bytes()))


CLIENTS = {"requests": send_requests, "urllib": send_urllib, "curl": send_curl}


@pytest.mark.parametrize("client", sorted(CLIENTS))
@pytest.mark.parametrize("service", SERVICES)
def test_every_input_of_the_corpus_gets_its_answer(stack, service, client, tmp_path):
    if client == "curl" and shutil.which("curl") is None:
        pytest.fail("curl is not installed (the test needs the real client)")
    url = stack.urls[service] + "/"
    wrong = {}
    for name, case in CORPUS.items():
        answer = CLIENTS[client](url, case, tmp_path)
        if case.expect == OK:
            proba = answer.body.get("probas" if service != "stacking" else "proba")
            if answer.status != 200 or not proba:
                wrong[name] = (answer.status, answer.body)
        elif (answer.status, answer.body.get("error", {}).get("code")) != (case.status, case.expect) \
                or not answer.body["error"].get("message"):
            wrong[name] = (answer.status, answer.body)
    assert not wrong, f"{service} via {client}: " + "; ".join(f"{n}: {s} {str(b)[:200]}" for n, (s, b) in wrong.items())
