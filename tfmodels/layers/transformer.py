"""The post-LayerNorm Transformer block shared by BERT and GPT-1.

Both papers use the original Transformer ordering: sublayer -> dropout -> add residual ->
LayerNorm (not the pre-LN ordering of GPT-2 and later).
"""
import keras

from tfmodels.layers.activations import gelu
from tfmodels.layers.attention import MultiHeadSelfAttention
from tfmodels.seeding import SeedStream


@keras.saving.register_keras_serializable(package="tfmodels")
class TransformerBlock(keras.layers.Layer):
    """x -> LN(x + Dropout(Attention(x))) -> LN(h + Dropout(FFN(h))).

    call(x, attention_mask=None): x [batch, seq, hidden] -> [batch, seq, hidden]; the mask is
    as in `MultiHeadSelfAttention` (1 where a query may attend to a key).

    kernel_initializer: the kind of initializer; every dense kernel gets its own copy, seeded
      from `seed` (int or None: drawn like unseeded Keras), as does every dropout.
    """

    def __init__(self, num_heads: int, intermediate_size: int, hidden_dropout: float = 0.1,
                 attention_dropout: float = 0.1, layer_norm_epsilon: float = 1e-12,
                 gelu_approximate: bool = True, kernel_initializer="glorot_uniform", seed=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.intermediate_size = intermediate_size
        self.hidden_dropout = hidden_dropout
        self.attention_dropout = attention_dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.gelu_approximate = gelu_approximate
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.seed = seed
        # Drawn now, in a fixed order, so the weights depend only on the seed.
        seeds = SeedStream(seed)
        self._attention_seed = seeds.next()
        self._intermediate_initializer = seeds.reseeded(kernel_initializer)
        self._output_initializer = seeds.reseeded(kernel_initializer)
        self._dropout_seed = seeds.next()

    def build(self, input_shape):
        hidden_size = input_shape[-1]
        if hidden_size % self.num_heads:
            raise ValueError(f"hidden size {hidden_size} not divisible by {self.num_heads} heads")
        policy = self.dtype_policy
        self.attention = MultiHeadSelfAttention(
            self.num_heads, hidden_size // self.num_heads, dropout=self.attention_dropout,
            kernel_initializer=self.kernel_initializer, seed=self._attention_seed, dtype=policy,
            name="attention")
        self.attention.build(input_shape)
        self.attention_layer_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=policy, name="attention_layer_norm")
        self.attention_layer_norm.build(input_shape)
        self.intermediate_dense = keras.layers.Dense(
            self.intermediate_size, kernel_initializer=self._intermediate_initializer,
            dtype=policy, name="intermediate")
        self.intermediate_dense.build(input_shape)
        self.output_dense = keras.layers.Dense(
            hidden_size, kernel_initializer=self._output_initializer, dtype=policy,
            name="output")
        self.output_dense.build(tuple(input_shape[:-1]) + (self.intermediate_size,))
        self.output_layer_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=policy, name="output_layer_norm")
        self.output_layer_norm.build(input_shape)
        self.dropout = keras.layers.Dropout(self.hidden_dropout, seed=self._dropout_seed,
                                            dtype=policy)
        self.built = True

    def call(self, x, attention_mask=None, training=None):
        attended = self.attention(x, attention_mask=attention_mask, training=training)
        x = self.attention_layer_norm(x + self.dropout(attended, training=training))
        hidden = gelu(self.intermediate_dense(x), approximate=self.gelu_approximate)
        hidden = self.output_dense(hidden)
        return self.output_layer_norm(x + self.dropout(hidden, training=training))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads,
                "intermediate_size": self.intermediate_size,
                "hidden_dropout": self.hidden_dropout,
                "attention_dropout": self.attention_dropout,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "gelu_approximate": self.gelu_approximate,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "seed": self.seed}
