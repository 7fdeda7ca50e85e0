"""The Open Inference Protocol routes in-process, on a test-double member, with tritonclient's own request builder
and response parser (JSON and binary tensors): the answers equal the raw POST's."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton

from shared.members import MemberSpec
from shared.serving import oip_codec
from shared.serving.app import create_app
from tests.conftest import image_bytes
from tests.serving.test_app import COLOURS, DOUBLE, double_member, train_double  # noqa: F401 - the fixture

RED = image_bytes("PNG", color=COLOURS["red"])
BLUE = image_bytes("JPEG", color=COLOURS["blue"])


@pytest.fixture
def client(double_member: MemberSpec, tmp_path: Path):  # noqa: F811 - the imported fixture
    train_double(tmp_path / "models", double_member)
    app = create_app({"SERVICE_NAME": DOUBLE, "MODELS_DIR": tmp_path / "models", "WEIGHTS_DIR": tmp_path,
                      "LOAD_IN_BACKGROUND": False, "MAX_IMAGE_BYTES": 200_000})
    return app.test_client()


def infer(client, images: list[bytes], *, binary_in: bool, binary_out: bool, outputs=("probas", "class_id", "label"),
          request_id: str = "r-1"):
    """One infer call built and parsed by tritonclient; returns (InferResult, HTTP response)."""
    tensor = triton.InferInput("image", [len(images)], "BYTES")
    if binary_in:
        tensor.set_data_from_numpy(np.array(images, dtype=object), binary_data=True)
        params = None
    else:
        tensor.set_data_from_numpy(np.array([base64.b64encode(i).decode() for i in images], dtype=object),
                                   binary_data=False)
        params = {"content_type": "base64"}
    wanted = [triton.InferRequestedOutput(name, binary_data=binary_out) for name in outputs]
    body, json_size = triton.InferenceServerClient.generate_request_body(
        [tensor], outputs=wanted, request_id=request_id, parameters=params)
    headers = {oip_codec.HEADER_LENGTH: str(json_size)} if json_size is not None else {}
    resp = client.post(f"/v2/models/{DOUBLE}/infer", data=body, headers=headers,
                       content_type="application/octet-stream" if json_size else "application/json")
    assert resp.status_code == 200, resp.data[:300]
    length = resp.headers.get(oip_codec.HEADER_LENGTH)
    return triton.InferenceServerClient.parse_response_body(resp.data, header_length=length and int(length)), resp


@pytest.mark.parametrize("binary_in", [False, True])
@pytest.mark.parametrize("binary_out", [False, True])
def test_infer_equals_the_raw_path_one_image_and_a_batch(client, binary_in, binary_out):
    raw = [client.post("/", data=img).get_json() for img in (RED, BLUE)]
    classes = client.get(f"/v2/models/{DOUBLE}").get_json()["parameters"]["classes"]
    for images, expected in (([RED], raw[:1]), ([RED, BLUE], raw)):
        result, resp = infer(client, images, binary_in=binary_in, binary_out=binary_out)
        assert (resp.headers.get(oip_codec.HEADER_LENGTH) is not None) == binary_out
        probas = result.as_numpy("probas")
        assert probas.dtype == np.float32 and probas.shape == (len(images), len(classes))
        np.testing.assert_allclose(probas, [[b["probas"][c] for c in classes] for b in expected], atol=1e-6)
        assert result.as_numpy("class_id").tolist() == [b["class_id"][0] for b in expected]
        assert [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")] == [
            b["label"] for b in expected]
        response = result.get_response()
        assert response["id"] == "r-1" and response["model_name"] == DOUBLE
        assert response["parameters"]["synthetic_weights"] == [True] * len(images)


def test_outputs_are_chosen_by_name_and_binary_data_output_applies_to_all(client):
    result, _ = infer(client, [RED], binary_in=True, binary_out=False, outputs=("label",))
    assert [o["name"] for o in result.get_response()["outputs"]] == ["label"]
    doc = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [RED.decode("latin-1")]}],
           "parameters": {"binary_data_output": True}}
    resp = client.post(f"/v2/models/{DOUBLE}/infer", json=doc)  # a raw string: one char per byte
    header = json.loads(resp.data[:int(resp.headers[oip_codec.HEADER_LENGTH])])
    assert resp.status_code == 200 and all("binary_data_size" in o["parameters"] for o in header["outputs"])
    assert "id" not in header


def test_metadata_server_and_readiness(client):
    meta = client.get(f"/v2/models/{DOUBLE}").get_json()
    assert meta["name"] == DOUBLE and meta["versions"] == [meta["parameters"]["model_version"]]
    assert meta["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    assert {o["name"]: (o["datatype"], o["shape"]) for o in meta["outputs"]} == {
        "probas": ("FP32", [-1, 2]), "class_id": ("INT64", [-1]), "label": ("BYTES", [-1])}
    assert client.get("/v2").get_json()["extensions"] == ["binary_tensor_data"]
    assert client.get(f"/v2/models/{DOUBLE}/ready").get_json() == {"name": DOUBLE, "ready": True}
    version = meta["versions"][0]
    assert client.get(f"/v2/models/{DOUBLE}/versions/{version}").status_code == 200
    assert client.get(f"/v2/models/{DOUBLE}/versions/nope").status_code == 404


def _doc(data, **extra):
    return {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [len(data)], "data": data, **extra}]}


@pytest.mark.parametrize("path, kwargs, status, words", [
    ("/v2/models/other/infer", {"json": _doc(["x"])}, 404, "not 'other'"),
    (f"/v2/models/{DOUBLE}/infer", {"data": b"{", "content_type": "application/json"}, 400, "not valid JSON"),
    (f"/v2/models/{DOUBLE}/infer", {"data": RED, "content_type": "image/png"}, 415, "Content-Type"),
    (f"/v2/models/{DOUBLE}/infer", {"json": {"inputs": []}}, 400, "exactly one input"),
    (f"/v2/models/{DOUBLE}/infer", {"json": _doc(["!!"], parameters={"content_type": "base64"})}, 400, "base64"),
    (f"/v2/models/{DOUBLE}/infer", {"json": _doc(["not an image"])}, 415, ""),
    (f"/v2/models/{DOUBLE}/infer", {"json": {**_doc(["a"]), "outputs": [{"name": "nope"}]}}, 400, "nope"),
    (f"/v2/models/{DOUBLE}/infer", {"data": b"x" * 400_001, "content_type": "application/json"}, 413, "400000"),
    (f"/v2/models/{DOUBLE}/infer", {"data": b'{"inputs": []}' + b"\0\0\0\x09", "content_type":
                                    "application/octet-stream", "headers": {oip_codec.HEADER_LENGTH: "99"}},
     400, oip_codec.HEADER_LENGTH),
])
def test_errors_are_the_protocols_flat_error_with_the_right_status(client, path, kwargs, status, words):
    resp = client.post(path, **kwargs)
    body = resp.get_json()
    assert resp.status_code == status and isinstance(body["error"], str) and words in body["error"], body


def test_bytes_tensor_round_trip_and_truncation():
    elements = [b"", b"abc", bytes(range(256))]
    assert oip_codec.unpack_bytes(oip_codec.pack_bytes(elements)) == elements
    with pytest.raises(oip_codec.BadRequest):
        oip_codec.unpack_bytes(oip_codec.pack_bytes([b"abcdef"])[:-1])
