"""GPT-1 (Radford et al. 2018): the causal Transformer decoder and its language model.

Inputs:
  input_ids   int32 [batch, seq]  BPE ids; ids >= 40478 are the added start / delimiter /
                                  classify tokens used by the fine-tuning input transforms
  input_mask  int32 [batch, seq]  optional, 1 for real tokens (only needed when padding is not
                                  at the end; right padding is already invisible to a causal
                                  model at real positions)
"""
from __future__ import annotations

from typing import Dict, Optional, Union

import keras
from keras import ops

from tfmodels import configs
from tfmodels.layers.attention import causal_mask, padding_mask
from tfmodels.layers.embeddings import PositionEmbedding, TiedEmbedding
from tfmodels.layers.tracking import CheckpointListsMixin
from tfmodels.layers.transformer import TransformerBlock
from tfmodels.seeding import SeedStream


@keras.saving.register_keras_serializable(package="tfmodels")
class GptDecoder(CheckpointListsMixin, keras.Model):
    """The GPT-1 decoder ("backbone"): token + position embeddings, dropout, L masked blocks.

    GPT-1 has no LayerNorm on the embeddings (unlike BERT) and no final LayerNorm (unlike
    GPT-2): each post-LN block already ends in one.

    call(inputs: dict with `input_ids`, optional `input_mask`) returns a dict:
      sequence_output  [batch, seq, hidden]
      hidden_states    list of L + 1 tensors [batch, seq, hidden] (embeddings, then each layer)

    seed: every weight is drawn independently from N(0, initializer_range) truncated, with
      seeds from this one (None: drawn like unseeded Keras); the same seed gives the same
      weights and dropout masks.
    dtype: the dtype policy (e.g. "mixed_bfloat16"); every sublayer takes it.
    """

    def __init__(self, config: Union[configs.GptConfig, dict, str] = "gpt1",
                 seed: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        self.config = configs.resolve_config(config, configs.GptConfig)
        self.seed = seed
        cfg = self.config
        seeds = SeedStream(seed)
        policy = self.dtype_policy
        self.token_embedding = TiedEmbedding(
            cfg.vocab_size, cfg.hidden_size,
            embeddings_initializer=seeds.truncated_normal(cfg.initializer_range), dtype=policy,
            name="token_embedding")
        self.position_embedding = PositionEmbedding(
            cfg.max_positions, cfg.hidden_size,
            initializer=seeds.truncated_normal(cfg.initializer_range), dtype=policy,
            name="position_embedding")
        self.embedding_dropout = keras.layers.Dropout(cfg.hidden_dropout, seed=seeds.next(),
                                                      dtype=policy)
        self.transformer_layers = [
            TransformerBlock(
                cfg.num_heads, cfg.intermediate_size, hidden_dropout=cfg.hidden_dropout,
                attention_dropout=cfg.attention_dropout,
                layer_norm_epsilon=cfg.layer_norm_epsilon,
                gelu_approximate=cfg.gelu_approximate,
                kernel_initializer=seeds.truncated_normal(cfg.initializer_range),
                seed=seeds.next(), dtype=policy, name=f"transformer_layer_{i}")
            for i in range(cfg.num_layers)
        ]
        self.build()

    def build(self, input_shape=None):
        hidden_shape = (None, None, self.config.hidden_size)
        self.token_embedding.build((None, None))
        self.position_embedding.build(hidden_shape)
        for layer in self.transformer_layers:
            layer.build(hidden_shape)
        self.built = True

    def call(self, inputs: Dict, training=None):
        input_ids = inputs["input_ids"]
        mask = causal_mask(ops.shape(input_ids)[1])
        if inputs.get("input_mask") is not None:
            mask = mask * padding_mask(inputs["input_mask"])
        hidden = self.token_embedding(input_ids) + self.position_embedding(input_ids)
        hidden = self.embedding_dropout(hidden, training=training)
        hidden_states = [hidden]
        for layer in self.transformer_layers:
            hidden = layer(hidden, attention_mask=mask, training=training)
            hidden_states.append(hidden)
        return {"sequence_output": hidden, "hidden_states": hidden_states}

    def lm_logits(self, sequence_output):
        """[..., hidden] -> [..., vocab_size] through the tied token embedding (compute dtype);
        the LSTM baseline (tfmodels.lstm) has the same method."""
        return self.token_embedding(sequence_output, reverse=True)

    def get_config(self):
        return {"config": configs.config_to_dict(self.config), "seed": self.seed,
                "name": self.name, "dtype": keras.dtype_policies.serialize(self.dtype_policy)}


class DecoderLanguageModel(keras.Model):
    """A left-to-right decoder + its LM output tied to the token embedding (no output bias, as
    in the original): GPT-1's pretraining model, and the LSTM baseline's (tfmodels.lstm).

    call(inputs) returns the decoder's outputs plus `logits`: float32 [batch, seq, vocab_size],
    where position t scores token t + 1.

    decoder: the decoder, or a config / named size to build one with this model's dtype
      policy and `seed` (the LM output is the decoder's tied embedding: nothing else to seed).
    """

    decoder_class: type = None        # set by each subclass
    default_config: str = ""

    def __init__(self, decoder=None, seed: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.decoder = configs.resolve_backbone(decoder or self.default_config,
                                                self.decoder_class, seed=seed,
                                                dtype=self.dtype_policy)
        self.built = True

    @property
    def config(self):
        return self.decoder.config

    def call(self, inputs: Dict, training=None):
        outputs = self.decoder(inputs, training=training)
        logits = self.decoder.lm_logits(outputs["sequence_output"])
        return {**outputs, "logits": ops.cast(logits, "float32")}

    def next_token_logits(self, inputs: Dict, lengths):
        """float32 [batch, vocab_size]: the logits after each row's last real token (`lengths`
        [batch] real tokens). The LM output runs at that position only, so generation holds
        one vocabulary row per sequence instead of seq_length of them."""
        hidden = self.decoder(inputs, training=False)["sequence_output"]
        last = ops.take_along_axis(hidden, ops.reshape(lengths - 1, (-1, 1, 1)), axis=1)[:, 0]
        return ops.cast(self.decoder.lm_logits(last), "float32")

    def token_log_probs(self, inputs: Dict):
        """float32 [batch, seq - 1]: log p(x_t | x_<t) of every token after the first (padding
        positions included: the caller masks them with input_mask[:, 1:]). The one scoring
        primitive: finetune.LanguageModel.score / perplexity and the zero-shot heuristics."""
        logits = self(inputs, training=False)["logits"]
        log_probs = ops.log_softmax(ops.cast(logits[:, :-1], "float32"), axis=-1)
        targets = ops.expand_dims(inputs["input_ids"][:, 1:], -1)
        return ops.take_along_axis(log_probs, targets, axis=-1)[..., 0]

    def get_config(self):
        return {"decoder": keras.saving.serialize_keras_object(self.decoder), "seed": self.seed,
                "name": self.name, "dtype": keras.dtype_policies.serialize(self.dtype_policy)}


@keras.saving.register_keras_serializable(package="tfmodels")
class GptLanguageModel(DecoderLanguageModel):
    """GPT-1 decoder + LM head tied to the token embedding."""

    decoder_class = GptDecoder
    default_config = "gpt1"

    @classmethod
    def from_preset(cls, name: str) -> "GptLanguageModel":
        """A released GPT-1 by name ("openai_gpt"; tfmodels/presets.py), fetched and
        converted on first use, then from the cache."""
        from tfmodels.checkpoints.formats import load_checkpoint
        from tfmodels.presets import PRESET_PREFIX
        model = load_checkpoint(PRESET_PREFIX + name)
        if not isinstance(model, GptLanguageModel):
            raise ValueError(f"preset {name} holds a {type(model).__name__}, not GPT-1")
        return model
