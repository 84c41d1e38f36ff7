"""The exported signatures' names, and how a Python function over a dict of tensors becomes a
concrete function whose inputs carry those dict keys as names (what TF Serving binds requests
to)."""
from __future__ import annotations

import inspect
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


def with_defaults(fn, defaults: Mapping[str, Any]):
    """`fn` (a concrete function from `concrete`) as a tf.function whose inputs named in
    `defaults` have those values as Python defaults: tf.saved_model.save records them in the
    SignatureDef's `defaults`, which TF Serving's Predict uses for an input a request leaves
    out. (Python's `tf.saved_model.load(...).signatures[name]` still needs every input.)
    The call runs `fn` itself: the export serves the graph that was traced in-process."""
    specs = fn.structured_input_signature[1]
    unknown = sorted(set(defaults) - set(specs))
    if unknown:
        raise ValueError(f"defaults for inputs the signature does not have: {unknown}")
    required = sorted(k for k in specs if k not in defaults)
    optional = sorted(k for k in specs if k in defaults)
    parameters = [inspect.Parameter(k, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                  for k in required]
    parameters += [inspect.Parameter(k, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                     default=tf.constant(defaults[k], specs[k].dtype))
                   for k in optional]
    signature = inspect.Signature(parameters)

    def call(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return fn(**bound.arguments)

    call.__signature__ = signature
    return tf.function(call, autograph=False,
                       input_signature=[tf.TensorSpec(specs[k].shape, specs[k].dtype, name=k)
                                        for k in required + optional])


def signature_info(signatures: Mapping, defaults: Mapping[str, Mapping[str, Any]] = {}
                   ) -> Dict[str, Any]:
    """name -> its inputs (dtype, shape, and the default of an input a request may leave out)
    and output names, as export.json records them."""
    info = {}
    for name, fn in signatures.items():
        inputs = fn.structured_input_signature[1]
        optional = defaults.get(name, {})
        info[name] = {
            "inputs": {k: {"dtype": v.dtype.name, "shape": v.shape.as_list(),
                           **({"default": optional[k]} if k in optional else {})}
                       for k, v in sorted(inputs.items())},
            "outputs": sorted(fn.structured_outputs)}
    return info
