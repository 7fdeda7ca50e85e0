"""The Open Inference Protocol on all four real gunicorns, spoken by the real tritonclient (JSON and binary tensors,
one image and a batch): every answer equals the raw POST's for the same image."""
from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from shared.config import Settings
from shared.members import GATEWAY
from tests.conftest import image_bytes
from tests.integration.conftest import SERVICES


@pytest.fixture(scope="module")
def photos(jpeg) -> list[bytes]:
    """A grocery photo from the shared datasets, the small test JPEG and a small PNG."""
    root = Path(Settings.from_env().datasets_dir) / "grocery" / "train"
    grocery = sorted(root.glob("*/*/*.jpg"))
    images = [grocery[0].read_bytes()] if grocery else []
    return images + [jpeg, image_bytes("PNG", size=(40, 30), color=(200, 180, 20))]


def client_for(url: str) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url.removeprefix("http://"), network_timeout=120.0, connection_timeout=30.0)


def infer(client, name: str, images: list[bytes], binary: bool):
    tensor = triton.InferInput("image", [len(images)], "BYTES")
    if binary:
        tensor.set_data_from_numpy(np.array(images, dtype=object), binary_data=True)
        params = None
    else:  # JSON, each image base64 as MLServer does
        tensor.set_data_from_numpy(np.array([base64.b64encode(i).decode() for i in images], dtype=object),
                                   binary_data=False)
        params = {"content_type": "base64"}
    outputs = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("probas", "class_id", "label")]
    return client.infer(name, [tensor], outputs=outputs, request_id=f"oip-{len(images)}-{binary}", parameters=params)


@pytest.mark.parametrize("name", SERVICES)
def test_tritonclient_answers_equal_the_raw_path(stack, photos, name):
    url = stack.urls[name]
    raw = [requests.post(url + "/", data=img, timeout=120).json() for img in photos]
    client = client_for(url)
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(name)
        meta = client.get_model_metadata(name)
        classes = meta["parameters"]["classes"]
        assert meta["outputs"][0] == {"name": "probas", "datatype": "FP32", "shape": [-1, len(classes)]}
        assert client.get_server_metadata()["name"] == name
        for binary in (False, True):
            for images, expected in (([photos[0]], raw[:1]), (photos, raw)):
                result = infer(client, name, images, binary)
                probas = result.as_numpy("probas")
                np.testing.assert_allclose(probas, [[b["probas"][c] for c in classes] for b in expected], atol=1e-6)
                assert result.as_numpy("class_id").tolist() == [b["class_id"][0] for b in expected]
                labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")]
                assert labels == [b["label"] for b in expected]
                response = result.get_response()
                assert response["id"] == f"oip-{len(images)}-{binary}" and response["model_name"] == name
                if name == GATEWAY:  # the gateway's own fields, one per image
                    params = response["parameters"]
                    assert params["degraded"] == [False] * len(images)
                    assert all(set(m) == set(raw[0]["members"]) for m in params["members"])
        with pytest.raises(InferenceServerException, match="supported image"):
            infer(client, name, [b"not an image"], binary=True)
    finally:
        client.close()
