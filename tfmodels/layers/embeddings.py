"""Embedding layers: a token embedding that doubles as the tied output projection, and learned
absolute position embeddings (both papers learn positions rather than using sinusoids)."""
import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfmodels")
class TiedEmbedding(keras.layers.Embedding):
    """Token embedding whose transpose is the language-model output layer.

    `call(ids)` looks tokens up: int [batch, seq] -> [batch, seq, hidden].
    `call(hidden, reverse=True)` projects back onto the vocabulary:
    [..., hidden] -> logits [..., vocab_size], sharing the same matrix as both papers do.
    """

    def call(self, inputs, reverse: bool = False):
        if not reverse:
            return super().call(inputs)
        kernel = ops.cast(self.embeddings, self.compute_dtype)
        return ops.matmul(inputs, ops.transpose(kernel))

    def compute_output_shape(self, input_shape, reverse: bool = False):
        if reverse:
            return tuple(input_shape[:-1]) + (self.input_dim,)
        return super().compute_output_shape(input_shape)


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
