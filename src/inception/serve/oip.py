"""The Open Inference Protocol v2 (KServe, Triton, TorchServe): its JSON, parsed and built.

``POST /v2/models/{name}/infer`` takes one input, either

* ``FP32`` ``[N, 3, S, S]``: images already preprocessed (resized, cropped, normalized with
  the model's mean/std, see ``GET /v1/model``), ``data`` flat in row-major order or nested;
* ``BYTES`` ``[N]``: encoded image files (JPEG, PNG, ...), each element a base64 string
  (or ``{"b64": "..."}``); the server decodes and preprocesses them as ``/v1/classify`` does;

and answers the outputs asked for (default: both) as ``FP32`` ``[N, classes]``:
``logits``, and ``probabilities`` (their softmax). An output asked for with
``"parameters": {"classification": K}`` comes back as ``BYTES`` ``[N, K]``, the top K as
``"probability:index:label"`` strings (Triton's classification extension).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass, field

import numpy as np

from .errors import ServeError

OUTPUTS = ("logits", "probabilities")


@dataclass
class InferRequest:
    id: str | None
    datatype: str                                   # FP32 or BYTES
    tensor: np.ndarray | None = None                # FP32: [N, 3, S, S]
    images: list[bytes] = field(default_factory=list)   # BYTES: encoded files
    outputs: list[tuple[str, int | None]] = field(default_factory=list)   # (name, classification top-k)

    @property
    def count(self) -> int:
        return len(self.tensor) if self.tensor is not None else len(self.images)


def model_metadata(name: str, *, platform: str, image_size: int, num_classes: int, input_name: str) -> dict:
    """``GET /v2/models/{name}``: the model's inputs and outputs (-1: any batch size)."""
    return {
        "name": name,
        "versions": ["1"],
        "platform": platform,
        "inputs": [{"name": input_name, "datatype": "FP32", "shape": [-1, 3, image_size, image_size]}],
        "outputs": [{"name": out, "datatype": "FP32", "shape": [-1, num_classes]} for out in OUTPUTS],
    }


def _bad(message: str) -> ServeError:
    return ServeError("bad_tensor", message)


def _shape(value, what: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in value):
        raise _bad(f"{what} 'shape' must be a list of non-negative integers (got {json.dumps(value)[:80]})")
    return value


def parse_infer_request(body: bytes, *, input_name: str, image_size: int, max_images: int) -> InferRequest:
    """The request JSON, checked: one input of a datatype, shape and size the model takes."""
    try:
        doc = json.loads(body, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as e:
        raise ServeError("bad_json", f"the body is not JSON ({str(e)[:120]}); send an inference request "
                                     '{"inputs": [{"name", "shape", "datatype", "data"}]}') from None
    except RecursionError:
        raise ServeError("bad_json", "the JSON is nested too deeply; an inference request needs at most "
                                     f"{MAX_DEPTH} levels") from None
    if _depth(doc) > MAX_DEPTH:
        raise ServeError("bad_json", f"the JSON is nested more than {MAX_DEPTH} levels deep; an inference request "
                                     "needs 7 (data nested [N][3][S][S] inside inputs)")
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        raise ServeError("bad_json", 'the request must be a JSON object with an "inputs" list')
    if doc.get("id") is not None and not isinstance(doc["id"], str):
        raise ServeError("bad_json", f"the request's 'id' must be a string (got {type(doc['id']).__name__})")
    inputs = doc["inputs"]
    if len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise _bad(f"send exactly one input (got {len(inputs)}): FP32 '{input_name}' [N,3,{image_size},{image_size}]"
                   " or BYTES [N] of encoded images")
    inp = inputs[0]
    req_id = doc.get("id")
    outputs = _parse_outputs(doc.get("outputs"))
    datatype = inp.get("datatype")
    shape = _shape(inp.get("shape"), "the input's")
    data = inp.get("data")
    if not isinstance(data, list):
        raise _bad("the input's 'data' must be a list (flat in row-major order, or nested)")
    if datatype == "FP32":
        if inp.get("name") != input_name:
            raise _bad(f"the model's FP32 input is '{input_name}' (got '{inp.get('name')}')")
        expected = [3, image_size, image_size]
        if len(shape) != 4 or shape[1:] != expected or shape[0] < 1:
            raise _bad(f"input '{input_name}' must have shape [N,3,{image_size},{image_size}], N >= 1 (got {shape}); "
                       "resize, crop and normalize as GET /v1/model describes, or send BYTES of encoded images")
        if shape[0] > max_images:
            raise ServeError("too_many_images", f"{shape[0]} images in one request; this server takes at most "
                                                f"{max_images}")
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                array = np.asarray(data, dtype=np.float32)
        except (ValueError, TypeError, OverflowError) as e:
            raise _bad(f"input '{input_name}' data must be numbers ({str(e)[:100]})") from None
        if array.dtype != np.float32 or array.size != math.prod(shape):
            raise _bad(f"input '{input_name}' has {array.size} values but shape {shape} needs {math.prod(shape)}")
        if not np.isfinite(array).all():
            raise _bad(f"input '{input_name}' holds {int((~np.isfinite(array)).sum())} values that are not finite "
                       "float32 numbers (beyond +-3.4e38, e.g. 1e39); send preprocessed pixels")
        return InferRequest(req_id, "FP32", tensor=array.reshape(shape), outputs=outputs)
    if datatype == "BYTES":
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1) or len(data) != shape[0]:
            raise _bad(f"a BYTES input must have shape [N] (or [N,1]) and N elements in 'data' (got shape {shape}, "
                       f"{len(data)} elements)")
        if not data:
            raise ServeError("empty_body", "the BYTES input holds no images")
        if len(data) > max_images:
            raise ServeError("too_many_images", f"{len(data)} images in one request; this server takes at most "
                                                f"{max_images}")
        return InferRequest(req_id, "BYTES", images=[_b64(x, i) for i, x in enumerate(data)], outputs=outputs)
    raise _bad(f"datatype '{datatype}' is not taken: send FP32 (preprocessed [N,3,{image_size},{image_size}]) or "
               "BYTES (base64 encoded image files)")


# The deepest an inference request goes: {inputs: [{data: [N][3][S][S]}]} is 7 levels.
MAX_DEPTH = 8


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number (JSON has no NaN or Infinity)")


def _depth(value, limit: int = MAX_DEPTH + 1) -> int:
    """How deep ``value`` nests lists and objects, counted up to ``limit`` (iteratively: a
    hostile document cannot exhaust the stack here)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (list, dict)):
            deepest = max(deepest, d)
            if d >= limit:
                return d
            items = v.values() if isinstance(v, dict) else v
            stack.extend((x, d + 1) for x in items if isinstance(x, (list, dict)))
    return deepest


def _b64(item, index: int) -> bytes:
    if isinstance(item, list) and len(item) == 1:     # nested [N,1]
        item = item[0]
    if isinstance(item, dict) and isinstance(item.get("b64"), str):
        item = item["b64"]
    if not isinstance(item, str):
        raise _bad(f"BYTES element {index} must be a base64 string (or {{\"b64\": ...}})")
    try:
        return base64.b64decode(item, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(f"BYTES element {index} is not valid base64") from None


def _parse_outputs(value) -> list[tuple[str, int | None]]:
    if value is None:
        return [(name, None) for name in OUTPUTS]
    if not isinstance(value, list) or not value:
        raise _bad('"outputs" must be a non-empty list of {"name": ...}')
    out = []
    for o in value:
        name = o.get("name") if isinstance(o, dict) else None
        if name not in OUTPUTS:
            raise _bad(f"output '{name}' is not an output of the model; ask for {' or '.join(OUTPUTS)}")
        params = o.get("parameters") or {}
        k = params.get("classification") if isinstance(params, dict) else None
        if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
            raise _bad(f"output '{name}': classification must be an integer >= 1 (got {k!r})")
        out.append((name, k))
    return out


def infer_response(name: str, req: InferRequest, logits: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    """The response JSON: each output asked for, flat in row-major order."""
    outputs = []
    for out, k in req.outputs:
        values = logits if out == "logits" else probs
        if k is None:
            outputs.append({"name": out, "datatype": "FP32", "shape": list(values.shape),
                            "data": values.astype(np.float32).ravel().tolist()})
            continue
        k = min(k, values.shape[1])
        order = np.argsort(-values, axis=1, kind="stable")[:, :k]
        data = [f"{values[r, j]:.6f}:{j}:{classes[j] if j < len(classes) else j}"
                for r in range(len(values)) for j in order[r]]
        outputs.append({"name": out, "datatype": "BYTES", "shape": [len(values), k], "data": data})
    doc = {"model_name": name, "model_version": "1", "outputs": outputs}
    if req.id is not None:
        doc["id"] = req.id
    return doc
