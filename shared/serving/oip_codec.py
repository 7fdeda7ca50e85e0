"""The Open Inference Protocol's wire format: a BYTES tensor of encoded images in, named output tensors out.

JSON (`{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [N], "data": [...]}]}`, each element base64
when `parameters.content_type` is "base64" as in MLServer, else a raw string, one char per byte) or Triton's
binary tensor extension: the JSON header, then the tensors' bytes, split by the `Inference-Header-Content-Length`
header; a BYTES element there is a 4-byte little-endian length and its bytes. Pure functions, no Flask.
"""
from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared.errors import BadRequest, UnsupportedImage

HEADER_LENGTH = "Inference-Header-Content-Length"
INPUT_NAME = "image"
JSON_TYPES = ("application/json", "text/json")
BINARY_TYPES = ("application/octet-stream", "application/vnd.sagemaker-triton.binary+json")
DTYPES = {"FP32": "<f4", "FP64": "<f8", "INT64": "<i8", "INT32": "<i4", "BOOL": "?"}


@dataclass
class InferRequest:
    """A decoded infer request: the images, which outputs to send and how, the id to echo."""

    images: list[bytes]
    id: str | None = None
    outputs: dict[str, bool] | None = None  # name -> binary; None: every output
    binary_default: bool = False  # the request's binary_data_output
    parameters: dict = field(default_factory=dict)


@dataclass
class Tensor:
    """An output tensor: numbers as an ndarray, BYTES as a list of bytes."""

    name: str
    datatype: str
    shape: list[int]
    data: Any


# --- BYTES elements ---------------------------------------------------------------------------------------------
def pack_bytes(elements: Sequence[bytes]) -> bytes:
    """Triton's serialised BYTES tensor: each element as a uint32 little-endian length, then its bytes."""
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def unpack_bytes(raw: bytes) -> list[bytes]:
    """The elements of a serialised BYTES tensor; a length running past the end is a 400."""
    out, pos = [], 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise BadRequest("A BYTES tensor ends inside an element's 4-byte length.", code="bad_tensor")
        (size,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + size > len(raw):
            raise BadRequest(f"A BYTES element says {size} bytes but only {len(raw) - pos} remain.",
                             code="bad_tensor")
        out.append(raw[pos:pos + size])
        pos += size
    return out


# --- requests ---------------------------------------------------------------------------------------------------
def decode_request(body: bytes, mimetype: str, header_length: str | None) -> InferRequest:
    """The infer request of an HTTP body; any malformation is a 400 saying what, a non-JSON type a 415."""
    if header_length is None:
        if mimetype and mimetype not in JSON_TYPES and not mimetype.endswith("+json"):
            raise UnsupportedImage(f"An infer request is JSON (or JSON + binary tensors with the {HEADER_LENGTH} "
                                   f"header); got Content-Type {mimetype!r}. POST raw image bytes to / instead.")
        header, binary = body, b""
    else:
        try:
            size = int(header_length)
        except ValueError:
            size = -1
        if not 0 <= size <= len(body):
            raise BadRequest(f"{HEADER_LENGTH} must be a length between 0 and the body's {len(body)} bytes; "
                             f"got {header_length[:40]!r}.", code="bad_header_length")
        header, binary = body[:size], body[size:]
    try:
        doc = json.loads(header)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"The inference request is not valid JSON: {exc}", code="bad_json") from None
    if not isinstance(doc, dict):
        raise BadRequest("The inference request must be a JSON object.", code="bad_json")
    params = _object(doc.get("parameters"), "parameters")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest("The request id must be a string.", code="bad_request")
    images, rest = _decode_inputs(doc.get("inputs"), binary, params)
    if rest:
        raise BadRequest(f"{len(rest)} bytes of binary data follow the tensors and belong to none.",
                         code="bad_tensor")
    return InferRequest(images=images, id=request_id, outputs=_decode_outputs(doc.get("outputs")),
                        binary_default=params.get("binary_data_output") is True, parameters=params)


def _decode_inputs(inputs: Any, binary: bytes, params: dict) -> tuple[list[bytes], bytes]:
    if not isinstance(inputs, list) or len(inputs) != 1:
        raise BadRequest(f'An infer request has exactly one input, {{"name": "{INPUT_NAME}", "datatype": "BYTES", '
                         '"shape": [N], ...}: N encoded images.', code="bad_inputs")
    tensor = inputs[0]
    if not isinstance(tensor, dict):
        raise BadRequest("An input must be a JSON object.", code="bad_inputs")
    if tensor.get("name") != INPUT_NAME:
        raise BadRequest(f"The input must be named {INPUT_NAME!r}; got {str(tensor.get('name'))[:40]!r}.",
                         code="bad_inputs")
    if tensor.get("datatype") != "BYTES":
        raise BadRequest(f"The input {INPUT_NAME!r} must be BYTES; got {str(tensor.get('datatype'))[:20]!r}.",
                         code="bad_inputs")
    count = _element_count(tensor.get("shape"))
    tparams = _object(tensor.get("parameters"), "input parameters")
    if "binary_data_size" in tparams:
        size = tparams["binary_data_size"]
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= len(binary):
            raise BadRequest(f"binary_data_size must be a length of at most the {len(binary)} binary bytes sent.",
                             code="bad_tensor")
        images, binary = unpack_bytes(binary[:size]), binary[size:]
    else:
        content_type = tparams.get("content_type", params.get("content_type"))
        images = [_element(value, content_type) for value in _flat(tensor.get("data"))]
    if len(images) != count:
        raise BadRequest(f"The input's shape says {count} images but it holds {len(images)}.", code="bad_tensor")
    if not images:
        raise BadRequest("The input holds no image.", code="empty_body")
    return images, binary


def _element_count(shape: Any) -> int:
    if (not isinstance(shape, list) or not shape
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise BadRequest("The input's shape must be a non-empty list of sizes >= 0, e.g. [N].", code="bad_tensor")
    return int(np.prod(shape))


def _flat(data: Any) -> list:
    if not isinstance(data, list):
        raise BadRequest("The input needs its images in `data` (a list) or as binary data.", code="bad_tensor")
    out = []
    for value in data:
        out.extend(_flat(value) if isinstance(value, list) else [value])
    return out


def _element(value: Any, content_type: Any) -> bytes:
    """One BYTES element of JSON data: base64 text, or a raw string whose chars are the bytes (latin-1)."""
    if not isinstance(value, str):
        raise BadRequest("Each BYTES element must be a string.", code="bad_tensor")
    if content_type == "base64":
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest("An element marked content_type base64 is not valid base64.", code="bad_base64") from None
    if content_type not in (None, "str", "bytes"):
        raise BadRequest(f"content_type must be base64 or str; got {str(content_type)[:20]!r}.", code="bad_tensor")
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


def _decode_outputs(outputs: Any) -> dict[str, bool] | None:
    if outputs is None:
        return None
    if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                for o in outputs):
        raise BadRequest('`outputs` must be a list of {"name": ...} objects.', code="bad_outputs")
    chosen = {}
    for output in outputs:
        binary = _object(output.get("parameters"), "output parameters").get("binary_data")
        chosen[output["name"]] = None if binary is None else binary is True
    return chosen


def _object(value: Any, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object.", code="bad_request")
    return value


# --- responses --------------------------------------------------------------------------------------------------
def encode_response(model_name: str, model_version: str, request: InferRequest, tensors: Sequence[Tensor],
                    parameters: dict) -> tuple[bytes, dict[str, str]]:
    """The body and headers of an infer response: the requested outputs, binary ones after the JSON header."""
    known = {t.name: t for t in tensors}
    check_outputs(request, list(known))
    wanted = request.outputs if request.outputs is not None else {name: None for name in known}
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request.id is not None:
        doc["id"] = request.id
    doc["parameters"] = parameters
    doc["outputs"], chunks = [], []
    for name, binary in wanted.items():
        tensor = known[name]
        out: dict[str, Any] = {"name": name, "datatype": tensor.datatype, "shape": tensor.shape}
        if binary if binary is not None else request.binary_default:
            raw = _binary(tensor)
            out["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            out["data"] = _json_data(tensor)
        doc["outputs"].append(out)
    header = json.dumps(doc).encode()
    if not chunks:
        return header, {"Content-Type": "application/json"}
    return header + b"".join(chunks), {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}


def check_outputs(request: InferRequest, names: Sequence[str]) -> None:
    """A 400 naming the requested outputs the model does not have."""
    unknown = sorted(set(request.outputs or ()) - set(names))
    if unknown:
        raise BadRequest(f"Unknown output(s) {', '.join(unknown)}; this model has {', '.join(names)}.",
                         code="bad_outputs")


def _binary(tensor: Tensor) -> bytes:
    if tensor.datatype == "BYTES":
        return pack_bytes(tensor.data)
    return np.ascontiguousarray(tensor.data, dtype=DTYPES[tensor.datatype]).tobytes()


def _json_data(tensor: Tensor) -> list:
    if tensor.datatype == "BYTES":
        return [e.decode("utf-8", errors="replace") for e in tensor.data]
    return np.asarray(tensor.data, dtype=DTYPES[tensor.datatype]).ravel().tolist()
