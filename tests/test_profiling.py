"""tfmodels.profiling: kernel times from a (synthetic) profiler trace, and the dtype census of a
step's graph (softmax / LayerNorm / loss stay float32 under mixed_bfloat16)."""
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2

from tfmodels import profiling

GRAD_MATMUL = ("StatefulPartitionedCall/gradient_tape/sst2_1/bert_encoder_1/transformer_layer_{}_1"
               "/attention_1/MatMul:_MklBatchMatMulV2")


def xspace(events, plane_name="/host:CPU"):
    """An XSpace with one host plane holding `events` [(name, milliseconds)] on one line."""
    space = xplane_pb2.XSpace()
    plane = space.planes.add(name=plane_name)
    line = plane.lines.add(name="tf_Compute/1")
    for i, (name, ms) in enumerate(events, start=1):
        plane.event_metadata[i].id = i
        plane.event_metadata[i].name = name
        line.events.add(metadata_id=i, duration_ps=int(ms * 1e9))
    return space


def test_kernel_times_are_summed_per_type_part_and_layer_folded_op():
    space = xspace([(GRAD_MATMUL.format(0), 3.0), (GRAD_MATMUL.format(1), 1.0),
                    ("adam_w/Sub_31:Sub", 2.0), ("adam_w/Sub_7:Sub", 2.0),
                    ("StatefulPartitionedCall/sst2_1/bert_encoder_1/transformer_layer_0_1/"
                     "attention_1/Softmax:Softmax", 4.0),
                    # not kernels, or kernels that only call traced functions
                    ("StatefulPartitionedCall:StatefulPartitionedCall", 100.0),
                    ("ExecutorState::Process", 50.0), ("ParallelFor", 20.0)])
    gpu = xspace([("adam_w/Sub:Sub", 9.0)], "/device:GPU:0").planes[0]
    space.planes.append(gpu)
    times = profiling.op_times(space, steps=2)
    assert times.by_type == pytest.approx({"_MklBatchMatMulV2": 2e-3, "Sub": 2e-3,
                                           "Softmax": 2e-3})
    assert times.total == pytest.approx(6e-3)
    assert times.by_part == pytest.approx({"backward attention": 2e-3,
                                           "optimizer update": 2e-3,
                                           "forward attention softmax": 2e-3})
    folded = "gradient_tape/sst2/bert_encoder/transformer_layer_N/attention/MatMul"
    assert times.by_op[f"{folded} (_MklBatchMatMulV2)"] == pytest.approx(2e-3)
    assert times.by_op["adam_w/Sub (Sub)"] == pytest.approx(2e-3)
    top = times.top("by_type", 1)
    assert len(top) == 1 and top[0][2] == pytest.approx(1 / 3)


@pytest.mark.parametrize("name, op_type, part", [
    ("sst2/bert_encoder/transformer_layer_2/intermediate/MatMul", "_MklMatMul",
     "forward feed-forward"),
    ("gradient_tape/sst2/bert_encoder/transformer_layer_2/output_layer_norm/mul", "Mul",
     "backward LayerNorm"),
    ("sst2/bert_encoder/transformer_layer_0/Gelu/Tanh", "Tanh", "forward GELU"),
    ("sst2/bert_encoder/dropout/stateless_dropout/x", "StatelessRandomUniformV2",
     "forward dropout"),
    ("global_norm/L2Loss", "L2Loss", "gradient clipping"),
    ("sst2/bert_encoder/word_embeddings/Cast", "Cast", "forward embeddings"),
    ("sst2/Cast_3", "Cast", "forward casts"),
])
def test_ops_are_assigned_to_parts_of_the_step(name, op_type, part):
    assert profiling.part_of(name, op_type) == part


def test_graph_dtypes_count_ops_in_called_functions_too():
    @tf.function
    def inner(x):
        logits = tf.cast(tf.matmul(x, x), tf.float32)
        return tf.nn.softmax(logits) * tf.math.rsqrt(tf.reduce_mean(logits) + 1.0)

    @tf.function
    def outer(x):
        return inner(tf.cast(x, tf.bfloat16)) + tf.nn.softmax(x)

    census = profiling.graph_dtypes(outer.get_concrete_function(tf.ones((2, 2))))
    assert census == {"Softmax": {"float32": 2}, "Rsqrt": {"float32": 1},
                      "MatMul": {"bfloat16": 1}}
    assert profiling.format_dtypes(census) == ("Softmax: 2 float32; Rsqrt: 1 float32; "
                                               "MatMul: 1 bfloat16")


def test_a_real_trace_names_the_kernels_that_ran(tmp_path):
    matmul = tf.function(lambda x: tf.nn.softmax(tf.matmul(x, x)))
    x = tf.constant(np.ones((64, 64), np.float32))
    matmul(x)
    with profiling.trace_to(str(tmp_path)):
        matmul(x).numpy()
    times = profiling.op_times(profiling.load_xspace(str(tmp_path)))
    assert any("MatMul" in op_type for op_type in times.by_type)
    assert "Softmax" in times.by_type or "_MklSoftmax" in times.by_type
    with pytest.raises(ValueError, match="no profiler trace"):
        profiling.load_xspace(str(tmp_path / "empty"))
