"""The exported signatures' names, and how a Python function over a dict of tensors becomes a
concrete function whose inputs carry those dict keys as names (what TF Serving binds requests
to)."""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping

import tensorflow as tf

DEFAULT_SIGNATURE = "serving_default"
IDS_SIGNATURE = "serving_ids"
GENERATE_SIGNATURE = "generate"
PREPROCESS_SIGNATURE = "preprocess"
TEXT = tf.TensorSpec([None], tf.string)


def concrete(fn: Callable[[Dict], Dict], specs: Mapping[str, tf.TensorSpec]):
    """A concrete function whose signature inputs are named like `specs`' keys."""
    specs = {k: tf.TensorSpec(v.shape, v.dtype, name=k) for k, v in specs.items()}
    return tf.function(lambda **inputs: fn(inputs), autograph=False).get_concrete_function(**specs)


def signature_info(signatures: Mapping) -> Dict[str, Any]:
    """name -> its inputs (dtype, shape) and output names, as export.json records them."""
    info = {}
    for name, fn in signatures.items():
        inputs = fn.structured_input_signature[1]
        info[name] = {
            "inputs": {k: {"dtype": v.dtype.name, "shape": v.shape.as_list()}
                       for k, v in sorted(inputs.items())},
            "outputs": sorted(fn.structured_outputs)}
    return info
