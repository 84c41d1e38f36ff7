"""Where a training step's time goes, op by op, from a TensorFlow profiler trace; and which
dtypes the step's graph computes its softmax, LayerNorm, loss and matmuls in.

    with trace_to(logdir):
        run_some_steps()
    table = op_times(load_xspace(logdir))      # OpTimes: per op type, per part of the model
    census = graph_dtypes(step._grads.get_concrete_function(batch))

The profiler's host plane has one event per executed TensorFlow kernel, named
"<op name>:<op type>" (e.g. "StatefulPartitionedCall/gradient_tape/.../MatMul:_MklMatMul", the
type after graph rewrites: `_Mkl*` kernels are oneDNN's). Their durations are summed per op
type and per part of the model (`part_of`). Times are summed over the threads that ran the
kernels, so with inter-op parallelism they add up to more than the step's wall time; shares
are of that sum. Under XLA a compiled cluster shows as one `_XlaRun` kernel.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import glob
import os
import re
from typing import Dict, Iterable, Iterator, List, Mapping, Sequence, Tuple

# Kernels that only call a function whose own kernels are traced too: counting them would
# count their contents twice.
CALL_OPS = frozenset({"PartitionedCall", "StatefulPartitionedCall", "While", "StatelessWhile",
                      "If", "StatelessIf", "Case", "StatelessCase"})
_KERNEL_EVENT = re.compile(r"^(?P<name>[^:]+):(?P<type>[A-Za-z_][A-Za-z0-9_]*)$")

# Parts of a Transformer step, matched against the op's name scopes in this order.
_PARTS: Tuple[Tuple[str, str], ...] = (
    ("optimizer update", r"(^|/)(adam_w|adam|lamb|loss_scale_optimizer)[_0-9]*/"),
    ("gradient clipping", r"(^|/)(global_norm|clip_by_global_norm)[_0-9]*/"),
    ("loss", r"(^|/)(sparse_categorical_crossentropy|categorical_crossentropy|"
             r"SparseSoftmaxCrossEntropyWithLogits|loss)[_0-9]*/"),
    ("dropout", r"dropout"),
    ("LayerNorm", r"layer_norm"),
    ("GELU", r"(?i)gelu"),
    ("attention softmax", r"attention[^/]*/.*softmax|attention[^/]*/.*Softmax"),
    ("attention", r"attention"),
    ("feed-forward", r"(intermediate|ffn|feed_forward|output_dense|mlp)"),
    ("embeddings", r"embedding"),
    ("task head", r"(classifier|head|pooler|dense)"),
)


@dataclasses.dataclass
class OpTimes:
    """Summed kernel time (seconds) by op type, by model part, by op (layer numbers folded)."""
    by_type: Dict[str, float]
    by_part: Dict[str, float]
    by_op: Dict[str, float]

    @property
    def total(self) -> float:
        return sum(self.by_type.values())

    def top(self, which: str, n: int = 10) -> List[Tuple[str, float, float]]:
        """[(key, seconds, share of all kernel time)] of the n largest entries."""
        table = getattr(self, which)
        total = self.total or 1.0
        return [(key, seconds, seconds / total) for key, seconds in
                sorted(table.items(), key=lambda kv: -kv[1])[:n]]


def part_of(op_name: str, op_type: str) -> str:
    """The part of the step an op belongs to: forward or backward, and which layer kind."""
    direction = "backward" if "gradient_tape/" in op_name else "forward"
    for part, pattern in _PARTS:
        if re.search(pattern, op_name):
            if part in ("optimizer update", "gradient clipping"):
                return part
            return f"{direction} {part}"
    if op_type == "Cast":
        return f"{direction} casts"
    return f"{direction} other"


def fold_layers(op_name: str) -> str:
    """One key for the same op in every layer: strips the function-call prefix, Keras' "_1"
    name-uniquing suffixes and layer indices ("transformer_layer_3" -> "transformer_layer_N")."""
    name = re.sub(r"^(StatefulPartitionedCall|PartitionedCall)(_\d+)?/", "", op_name)
    name = re.sub(r"_layer_\d+", "_layer_N", name)
    name = re.sub(r"(?<=[A-Za-z0-9])(_\d+)+(?=/|$)", "", name)
    return name


def kernel_events(xspace) -> Iterator[Tuple[str, str, float]]:
    """(op name, op type, seconds) of every TensorFlow kernel on the host plane(s)."""
    for plane in xspace.planes:
        if not plane.name.startswith("/host:"):
            continue
        names = {key: meta.name for key, meta in plane.event_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                match = _KERNEL_EVENT.match(names.get(event.metadata_id, ""))
                if match and match["type"] not in CALL_OPS:
                    yield match["name"], match["type"], event.duration_ps * 1e-12


def op_times(xspace, steps: int = 1) -> OpTimes:
    """Kernel time per op type / model part / folded op name, divided by `steps` (per step)."""
    by_type: Dict[str, float] = collections.defaultdict(float)
    by_part: Dict[str, float] = collections.defaultdict(float)
    by_op: Dict[str, float] = collections.defaultdict(float)
    for name, op_type, seconds in kernel_events(xspace):
        by_type[op_type] += seconds / steps
        by_part[part_of(name, op_type)] += seconds / steps
        by_op[f"{fold_layers(name)} ({op_type})"] += seconds / steps
    return OpTimes(dict(by_type), dict(by_part), dict(by_op))


def load_xspace(logdir: str):
    """The newest profile written under `logdir` (tf.profiler.experimental.start/stop)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    files = sorted(glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb")))
    if not files:
        raise ValueError(f"no profiler trace (*.xplane.pb) under {logdir}")
    xspace = xplane_pb2.XSpace()
    with open(files[-1], "rb") as f:
        xspace.ParseFromString(f.read())
    return xspace


@contextlib.contextmanager
def trace_to(logdir: str):
    import tensorflow as tf

    tf.profiler.experimental.start(logdir)
    try:
        yield
    finally:
        tf.profiler.experimental.stop()


# ---- what the graph computes in which dtype -----------------------------------------------------

# Ops whose precision matters: the softmaxes and the loss, LayerNorm's inverse std (Keras
# computes LayerNorm in float32 whatever the policy), GELU, and the matmuls.
WATCHED_OPS = ("Softmax", "LogSoftmax", "SparseSoftmaxCrossEntropyWithLogits", "Rsqrt", "Erf",
               "Tanh", "MatMul", "BatchMatMulV2")


def _node_dtype(node) -> str:
    for attr in ("T", "dtype", "DstT"):
        if attr in node.attr and node.attr[attr].type:
            from tensorflow.python.framework import dtypes
            return dtypes.as_dtype(node.attr[attr].type).name
    return "?"


def _all_nodes(graph_def) -> Iterable:
    yield from graph_def.node
    for function in graph_def.library.function:
        yield from function.node_def


def graph_dtypes(concrete_function, op_types: Sequence[str] = WATCHED_OPS
                 ) -> Dict[str, Dict[str, int]]:
    """{op type: {dtype: count}} over the function's graph and every function it calls."""
    census: Dict[str, Dict[str, int]] = {t: collections.Counter() for t in op_types}
    for node in _all_nodes(concrete_function.graph.as_graph_def()):
        if node.op in census:
            census[node.op][_node_dtype(node)] += 1
    return {t: dict(c) for t, c in census.items() if c}


def format_dtypes(census: Mapping[str, Mapping[str, int]]) -> str:
    return "; ".join(f"{op}: " + ", ".join(f"{n} {dtype}" for dtype, n in sorted(counts.items()))
                     for op, counts in census.items())
