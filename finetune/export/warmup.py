"""Warmup requests and the op audit of an export.

TF Serving replays assets.extra/tf_serving_warmup_requests (PredictionLog records) before it
serves a version; `audit_ops` lists the op types a SavedModel needs beyond core TensorFlow (the
tensorflow-text kernels of the raw-text signatures; BUILD_NOTES.md, "Serving: custom ops").
"""
from __future__ import annotations

import functools
import os
import subprocess
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

OPS_FILE = "ops.json"
WARMUP_FILE = "tf_serving_warmup_requests"


def example_request(specs: Mapping[str, tf.TensorSpec], seq_length: int,
                    width: Optional[int] = None) -> Dict[str, np.ndarray]:
    """A small valid request (batch 1) for a signature's inputs: warmup and tests. Id inputs of
    open width get `width` positions (default seq_length), strings a short or a long text."""
    width = width or seq_length
    values = {}
    for name, spec in specs.items():
        shape = [1 if i == 0 else width if d is None else d for i, d in enumerate(spec.shape)]
        if name == "stop":  # generate: a stop string
            values[name] = np.array([b"."], dtype=object)
        elif spec.dtype == tf.string:
            text = "a warm up request" if width < seq_length else " ".join(["warm up"] * seq_length)
            values[name] = np.full(shape, text.encode(), dtype=object)
        elif name in ("max_new_tokens", "top_k", "num_beams"):
            values[name] = np.array(1, np.int32)
        elif name in ("temperature", "top_p"):
            values[name] = np.array(1.0, np.float32)
        elif name == "do_sample":
            values[name] = np.array(False)
        elif name == "input_mask":
            values[name] = (np.arange(shape[-1]) < 2).astype(np.int32) * np.ones(shape, np.int32)
        elif name == "classify_position":
            values[name] = np.ones(shape, np.int32)
        else:
            values[name] = np.zeros(shape, spec.dtype.as_numpy_dtype)
    return values


def predict_request(model_name: str, signature_name: str, inputs: Mapping[str, Any]):
    """A tensorflow_serving PredictRequest for `inputs` (name -> array-like)."""
    from tensorflow_serving.apis import predict_pb2
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


def write_warmup(path: str, requests: Sequence) -> None:
    """TF Serving's warmup file: one PredictionLog record per request."""
    from tensorflow_serving.apis import prediction_log_pb2
    with tf.io.TFRecordWriter(path) as writer:
        for request in requests:
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def read_warmup(path: str) -> List:
    """The PredictionLog records of a warmup file (tests, inspection)."""
    from tensorflow_serving.apis import prediction_log_pb2
    logs = []
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record)
        logs.append(log)
    return logs


@functools.lru_cache(maxsize=None)
def core_ops() -> frozenset:
    """Op types registered by TensorFlow alone: listed by a fresh interpreter that imports
    only tensorflow (this one has tensorflow-text's ops loaded)."""
    script = ("from tensorflow.python.client import pywrap_tf_session as c\n"
              "from tensorflow.core.framework import op_def_pb2\n"
              "b = c.TF_GetAllOpList(); ops = op_def_pb2.OpList()\n"
              "ops.ParseFromString(c.TF_GetBuffer(b)); c.TF_DeleteBuffer(b)\n"
              "print('\\n'.join(o.name for o in ops.op))\n")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, check=True)
    return frozenset(result.stdout.split())


def graph_ops(saved_model_dir: str) -> List[str]:
    """Every op type in a SavedModel's graphs, function library included."""
    from tensorflow.core.protobuf import saved_model_pb2
    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    ops = set()
    for meta in saved.meta_graphs:
        ops.update(node.op for node in meta.graph_def.node)
        for fn in meta.graph_def.library.function:
            ops.update(node.op for node in fn.node_def)
    # Calls of library functions name the function as their op type.
    functions = {fn.signature.name for meta in saved.meta_graphs
                 for fn in meta.graph_def.library.function}
    return sorted(ops - functions)


def audit_ops(saved_model_dir: str) -> List[str]:
    """Sorted op types of the SavedModel that core TensorFlow does not register (the
    tensorflow-text kernels a server must link); [] means stock TF Serving can serve it."""
    return sorted(set(graph_ops(saved_model_dir)) - core_ops())

