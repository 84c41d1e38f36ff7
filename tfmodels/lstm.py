"""GPT-1's LSTM baseline (Radford et al. 2018, Section 5 "Ablation studies", Table 5): "a single
layer 2048 unit LSTM using the same framework" — the same BPE vocabulary, pretraining objective,
fine-tuning input transforms and auxiliary LM loss as the Transformer, only the backbone differs.

Inputs (the same as tfmodels.gpt, so every GPT-1 pipeline feeds it unchanged):
  input_ids   int32 [batch, seq]  BPE ids (ids >= 40478: the added start / delimiter / classify)
  input_mask  int32 [batch, seq]  optional and ignored: a left-to-right model's real positions
                                  never see right padding (what every pipeline here writes);
                                  left padding is not supported

The tied LM output: the LSTM's states are `lstm_units` wide but the token embedding (which is
also the output matrix, as in GPT-1) is `embedding_size` wide, so `lm_logits` first projects the
states back with a Dense layer (`lm_projection`), then multiplies by the embedding's transpose.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple, Union

import keras

from tfmodels import configs
from tfmodels.gpt import DecoderLanguageModel
from tfmodels.layers.embeddings import TiedEmbedding
from tfmodels.layers.tracking import CheckpointListsMixin
from tfmodels.seeding import SeedStream


@keras.saving.register_keras_serializable(package="tfmodels")
class LstmDecoder(CheckpointListsMixin, keras.Model):
    """The LSTM backbone: token embedding -> dropout -> [LSTM -> dropout] x num_layers.

    call(inputs: dict with `input_ids`, optional `input_mask`) returns a dict like GptDecoder's:
      sequence_output  [batch, seq, lstm_units]
      hidden_states    [embeddings [batch, seq, embedding_size], then each layer's output
                       [batch, seq, lstm_units]] (widths: `hidden_state_sizes`)
    lm_logits(sequence_output) -> [batch, seq, vocab_size] through the tied embedding.

    use_cudnn: Keras' LSTM option, an execution choice rather than part of the config: "auto"
      runs the cuDNN kernel on GPUs (float32 / float16 / bfloat16); pass False when the model
      runs inside an XLA-compiled function (`jit_compile`), which cannot compile that kernel
      (the generic loop it falls back to compiles everywhere).
    seed: seeds every initializer and dropout (None: drawn like unseeded Keras); the same seed
      gives the same weights and dropout masks.
    dtype: the dtype policy (e.g. "mixed_bfloat16"); every sublayer takes it.
    """

    def __init__(self, config: Union[configs.LstmConfig, dict, str] = "lstm_2048",
                 use_cudnn: Union[str, bool] = "auto", seed: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        self.config = configs.resolve_config(config, configs.LstmConfig)
        self.use_cudnn = use_cudnn
        self.seed = seed
        cfg = self.config
        seeds = SeedStream(seed)
        policy = self.dtype_policy
        self.token_embedding = TiedEmbedding(
            cfg.vocab_size, cfg.embedding_size,
            embeddings_initializer=seeds.truncated_normal(cfg.initializer_range), dtype=policy,
            name="token_embedding")
        self.embedding_dropout = keras.layers.Dropout(cfg.hidden_dropout, seed=seeds.next(),
                                                      dtype=policy)
        # Keras' LSTM defaults (glorot kernel, orthogonal recurrent kernel, forget bias 1)
        # also keep the cuDNN kernel eligible on GPUs; here they are seeded.
        self.lstm_layers = [
            keras.layers.LSTM(cfg.lstm_units, return_sequences=True, use_cudnn=use_cudnn,
                              kernel_initializer=seeds.glorot_uniform(),
                              recurrent_initializer=seeds.orthogonal(), seed=seeds.next(),
                              dtype=policy, name=f"lstm_layer_{i}")
            for i in range(cfg.num_layers)
        ]
        self.output_dropout = keras.layers.Dropout(cfg.hidden_dropout, seed=seeds.next(),
                                                   dtype=policy)
        self.lm_projection = keras.layers.Dense(
            cfg.embedding_size, kernel_initializer=seeds.truncated_normal(cfg.initializer_range),
            dtype=policy, name="lm_projection")
        self.build()

    @property
    def hidden_state_sizes(self) -> Tuple[int, ...]:
        """The width of each of `hidden_states`: the embeddings, then every layer."""
        return (self.config.embedding_size,) + (self.config.lstm_units,) * self.config.num_layers

    def build(self, input_shape=None):
        # Eagerly, like the Transformers: checkpoints restore without a forward pass.
        self.token_embedding.build((None, None))
        width = self.config.embedding_size
        for layer in self.lstm_layers:
            layer.build((None, None, width))
            width = self.config.lstm_units
        self.lm_projection.build((None, None, self.config.lstm_units))
        self.built = True

    def call(self, inputs: Dict, training=None):
        hidden = self.token_embedding(inputs["input_ids"])
        hidden = self.embedding_dropout(hidden, training=training)
        hidden_states = [hidden]
        for layer in self.lstm_layers:
            hidden = self.output_dropout(layer(hidden, training=training), training=training)
            hidden_states.append(hidden)
        return {"sequence_output": hidden, "hidden_states": hidden_states}

    def lm_logits(self, sequence_output):
        """[..., lstm_units] -> [..., vocab_size]: project to the embedding width, then the
        tied embedding's transpose (compute dtype; callers cast to float32)."""
        return self.token_embedding(self.lm_projection(sequence_output), reverse=True)

    def get_config(self):
        return {"config": configs.config_to_dict(self.config), "use_cudnn": self.use_cudnn,
                "seed": self.seed, "name": self.name,
                "dtype": keras.dtype_policies.serialize(self.dtype_policy)}


@keras.saving.register_keras_serializable(package="tfmodels")
class LstmLanguageModel(DecoderLanguageModel):
    """LstmDecoder + its tied LM output: GPT-1's pretraining objective on the LSTM baseline
    (what tfmodels.losses.gpt_pretraining_loss reads, like GptLanguageModel's)."""

    decoder_class = LstmDecoder
    default_config = "lstm_2048"
