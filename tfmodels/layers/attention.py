"""Multi-head scaled dot-product self-attention (Vaswani et al. 2017), as used by both papers."""
import math

import keras
from keras import ops

from tfmodels.seeding import SeedStream

# Added to the logits of keys a query may not see. Large enough to zero them after softmax in
# float32 (where the softmax always runs, whatever the layer's dtype policy).
_MASKED_LOGIT = -1e9


@keras.saving.register_keras_serializable(package="tfmodels")
class MultiHeadSelfAttention(keras.layers.Layer):
    """Self-attention with one fused query/key/value projection.

    Fusing Q, K and V into one [hidden, 3 * hidden] matmul is what GPT-1's `c_attn` does and is
    faster than three smaller matmuls on CPU and GPU; converters split/concatenate BERT's
    separate query/key/value kernels.

    call(x, attention_mask=None):
      x: [batch, seq, hidden].
      attention_mask: optional, 1/True where query i may attend to key j. Shape
        [batch, seq_q, seq_k], [batch, 1, seq_k] (padding only) or [1, seq_q, seq_k] (causal).
    Returns [batch, seq, hidden], and with `return_attention_scores=True` also the attention
    probabilities [batch, heads, seq_q, seq_k] (before dropout).

    kernel_initializer: the kind of initializer; each projection gets its own copy, seeded
      from `seed` (one shared instance would give both the same values, tfmodels.seeding).
    seed: int or None (drawn like unseeded Keras); the same seed, the same weights and
      dropout masks.
    """

    def __init__(self, num_heads: int, head_size: int, dropout: float = 0.0,
                 kernel_initializer="glorot_uniform", seed=None, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.head_size = head_size
        self.dropout = dropout
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.seed = seed
        seeds = SeedStream(seed)
        self.qkv = keras.layers.Dense(
            3 * num_heads * head_size, kernel_initializer=seeds.reseeded(kernel_initializer),
            dtype=self.dtype_policy, name="qkv")
        self._output_initializer = seeds.reseeded(kernel_initializer)
        self.output_dense = None  # built once the input width is known
        self.probs_dropout = keras.layers.Dropout(dropout, seed=seeds.next(),
                                                  dtype=self.dtype_policy)

    def build(self, input_shape):
        hidden_size = input_shape[-1]
        self.qkv.build(input_shape)
        self.output_dense = keras.layers.Dense(
            hidden_size, kernel_initializer=self._output_initializer, dtype=self.dtype_policy,
            name="output")
        self.output_dense.build(tuple(input_shape[:-1]) + (self.num_heads * self.head_size,))
        self.built = True

    def call(self, x, attention_mask=None, training=None, return_attention_scores=False):
        batch, seq = ops.shape(x)[0], ops.shape(x)[1]
        qkv = ops.reshape(self.qkv(x), (batch, seq, 3, self.num_heads, self.head_size))
        # [3, batch, heads, seq, head_size]
        qkv = ops.transpose(qkv, (2, 0, 3, 1, 4))
        # unstack, not qkv[0], qkv[1], qkv[2]: each strided slice's gradient
        # (StridedSliceGrad) writes a full [3, batch, heads, seq, head_size] tensor of zeros
        # around its third, then the three are summed: 8-12% of a short-row MiniLM step's
        # kernel time, in float32 and bf16 alike (issue 44's profile). Unpack's gradient
        # stacks the three. Same values either way.
        query, key, value = ops.unstack(qkv, 3, axis=0)
        query = query * ops.cast(1.0 / math.sqrt(self.head_size), query.dtype)
        logits = ops.matmul(query, ops.transpose(key, (0, 1, 3, 2)))  # [b, h, q, k]
        # Softmax in float32: fp16/bf16 logits lose the small differences that matter here.
        logits = ops.cast(logits, "float32")
        if attention_mask is not None:
            visible = ops.cast(attention_mask, "float32")[:, None, :, :]
            logits = logits + (1.0 - visible) * _MASKED_LOGIT
        probs = ops.softmax(logits, axis=-1)
        dropped = self.probs_dropout(ops.cast(probs, self.compute_dtype), training=training)
        context = ops.matmul(dropped, value)  # [b, h, q, head_size]
        context = ops.reshape(ops.transpose(context, (0, 2, 1, 3)),
                              (batch, seq, self.num_heads * self.head_size))
        output = self.output_dense(context)
        if return_attention_scores:
            return output, probs
        return output

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads,
                "head_size": self.head_size, "dropout": self.dropout,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "seed": self.seed}


def padding_mask(input_mask):
    """input_mask [batch, seq] (1 = real token) -> attention mask [batch, 1, seq]."""
    return ops.cast(input_mask, "int32")[:, None, :]


def causal_mask(seq_length):
    """[1, seq, seq] lower-triangular mask: query i sees keys j <= i (GPT's masked attention)."""
    positions = ops.arange(seq_length)
    return ops.cast(positions[:, None] >= positions[None, :], "int32")[None, :, :]
