"""Output heads of the pretraining objectives."""
import keras
from keras import ops

from tfmodels.layers.activations import gelu


@keras.saving.register_keras_serializable(package="tfmodels")
class MaskedLMHead(keras.layers.Layer):
    """BERT's MLM head: gather masked positions -> dense -> GELU -> LayerNorm -> tied decoder + bias.

    call(sequence_output [batch, seq, hidden], positions int [batch, num_predictions],
         token_embedding: the encoder's `TiedEmbedding`) -> float32 logits
         [batch, num_predictions, vocab_size].
    Only the masked positions are projected onto the vocabulary, as in google-research/bert:
    the [hidden x vocab] matmul over every position would dominate the step.
    positions=None projects every position ([batch, seq, vocab_size]): the left-to-right LM
    (`BertCausalLM`) predicts a token everywhere.
    """

    def __init__(self, vocab_size: int, layer_norm_epsilon: float = 1e-12,
                 gelu_approximate: bool = True, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.layer_norm_epsilon = layer_norm_epsilon
        self.gelu_approximate = gelu_approximate
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, sequence_output_shape, positions_shape=None):
        hidden_size = sequence_output_shape[-1]
        self.transform = keras.layers.Dense(
            hidden_size, kernel_initializer=self.kernel_initializer, dtype=self.dtype_policy,
            name="transform")
        self.transform.build((None, hidden_size))
        self.layer_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="layer_norm")
        self.layer_norm.build((None, hidden_size))
        self.output_bias = self.add_weight(
            name="output_bias", shape=(self.vocab_size,), initializer="zeros")
        self.built = True

    def call(self, sequence_output, positions, token_embedding):
        gathered = sequence_output
        if positions is not None:
            gathered = ops.take_along_axis(
                sequence_output, ops.cast(positions, "int32")[:, :, None], axis=1)
        hidden = gelu(self.transform(gathered), approximate=self.gelu_approximate)
        hidden = self.layer_norm(hidden)
        logits = token_embedding(hidden, reverse=True)
        return ops.cast(logits, "float32") + ops.cast(self.output_bias, "float32")

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "gelu_approximate": self.gelu_approximate,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}
