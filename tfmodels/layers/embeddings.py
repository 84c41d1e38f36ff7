"""Embedding layers: a token embedding that doubles as the tied output projection, and learned
absolute position embeddings (both papers learn positions rather than using sinusoids)."""
import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfmodels")
class TiedEmbedding(keras.layers.ReversibleEmbedding):
    """Token embedding whose transpose is the language-model output layer: Keras'
    `ReversibleEmbedding` with tied weights (both papers share the matrix).

    `call(ids)` looks tokens up: int [batch, seq] -> [batch, seq, hidden].
    `call(hidden, reverse=True)` projects back onto the vocabulary:
    [..., hidden] -> logits [..., vocab_size].

    The one difference from the Keras layer's defaults: the reverse projection runs in the
    layer's compute dtype (bf16 under mixed_bfloat16, like every other matmul of the models),
    where Keras would leave its float32 kernel to upcast the product. The class keeps its
    registered name and the `embeddings` weight, so saved models and checkpoints load.
    """

    def __init__(self, input_dim, output_dim, **kwargs):
        super().__init__(input_dim, output_dim, **kwargs)
        if self.reverse_dtype is None:
            self.reverse_dtype = self.compute_dtype
        if not self.tie_weights:
            raise ValueError("TiedEmbedding ties its weights: use "
                             "keras.layers.ReversibleEmbedding for an untied projection")


@keras.saving.register_keras_serializable(package="tfmodels")
class PositionEmbedding(keras.layers.Layer):
    """Learned absolute position embeddings.

    Input: any tensor [batch, seq, ...]; output: [1, seq, hidden] (broadcasts over the batch).
    `seq` may be at most `max_positions`.
    """

    def __init__(self, max_positions: int, hidden_size: int, initializer="glorot_uniform",
                 **kwargs):
        super().__init__(**kwargs)
        self.max_positions = max_positions
        self.hidden_size = hidden_size
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.max_positions, self.hidden_size),
            initializer=self.initializer)
        self.built = True

    def call(self, inputs):
        seq_length = ops.shape(inputs)[1]
        positions = ops.cast(self.embeddings[:seq_length], self.compute_dtype)
        return positions[None, :, :]

    def compute_output_shape(self, input_shape):
        return (1, input_shape[1], self.hidden_size)

    def get_config(self):
        return {**super().get_config(), "max_positions": self.max_positions,
                "hidden_size": self.hidden_size,
                "initializer": keras.initializers.serialize(self.initializer)}
