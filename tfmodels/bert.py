"""BERT (Devlin et al. 2018): the bidirectional encoder and its pretraining model (MLM + NSP),
plus the left-to-right LM of the paper's "LTR & No NSP" ablation (`BertCausalLM`).

Inputs follow google-research/bert's feature names so TFRecords, models and exported signatures
speak the same language:
  input_ids    int32 [batch, seq]  WordPiece ids of `[CLS] A [SEP] B [SEP] [PAD]...`
  segment_ids  int32 [batch, seq]  0 for A (with [CLS] and its [SEP]), 1 for B
  input_mask   int32 [batch, seq]  1 for real tokens, 0 for padding
"""
from __future__ import annotations

from typing import Dict, Optional, Union

import keras
from keras import ops

from tfmodels import configs
from tfmodels.layers.attention import causal_mask, padding_mask
from tfmodels.layers.embeddings import PositionEmbedding, TiedEmbedding
from tfmodels.layers.heads import MaskedLMHead
from tfmodels.layers.tracking import CheckpointListsMixin
from tfmodels.layers.transformer import TransformerBlock
from tfmodels.seeding import SeedStream


@keras.saving.register_keras_serializable(package="tfmodels")
class BertEncoder(CheckpointListsMixin, keras.Model):
    """The BERT encoder ("backbone"): embeddings, L post-LN Transformer blocks and the pooler.

    With `config.causal` every position attends only to itself and earlier positions.

    call(inputs: dict with `input_ids` and optionally `segment_ids` (default 0) and `input_mask`
    (default: all ones)) returns a dict:
      sequence_output  [batch, seq, hidden]   the last layer
      pooled_output    [batch, hidden]        tanh(dense([CLS] of the last layer))
      hidden_states    list of L + 1 tensors [batch, seq, hidden]: the embedding output, then
                       each layer's output (for feature-based use and layer transfer)

    seed: every weight is drawn independently from N(0, initializer_range) truncated, as in
      the paper, with seeds from this one (None: drawn like unseeded Keras); the same seed
      gives the same weights and dropout masks.
    dtype: the dtype policy (e.g. "mixed_bfloat16"); every sublayer takes it.
    """

    def __init__(self, config: Union[configs.BertConfig, dict, str] = "bert_base",
                 seed: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        self.config = configs.resolve_config(config, configs.BertConfig)
        self.seed = seed
        cfg = self.config
        seeds = SeedStream(seed)
        policy = self.dtype_policy
        self.token_embedding = TiedEmbedding(
            cfg.vocab_size, cfg.hidden_size,
            embeddings_initializer=seeds.truncated_normal(cfg.initializer_range), dtype=policy,
            name="token_embedding")
        self.segment_embedding = keras.layers.Embedding(
            cfg.type_vocab_size, cfg.hidden_size,
            embeddings_initializer=seeds.truncated_normal(cfg.initializer_range), dtype=policy,
            name="segment_embedding")
        self.position_embedding = PositionEmbedding(
            cfg.max_positions, cfg.hidden_size,
            initializer=seeds.truncated_normal(cfg.initializer_range), dtype=policy,
            name="position_embedding")
        self.embedding_layer_norm = keras.layers.LayerNormalization(
            epsilon=cfg.layer_norm_epsilon, dtype=policy, name="embedding_layer_norm")
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
        self.pooler = keras.layers.Dense(
            cfg.hidden_size, activation="tanh",
            kernel_initializer=seeds.truncated_normal(cfg.initializer_range), dtype=policy,
            name="pooler")
        self.build()

    def build(self, input_shape=None):
        # Weights depend only on the config, so build them up front: converters and
        # checkpoint restores can then assign values without a forward pass.
        cfg = self.config
        hidden_shape = (None, None, cfg.hidden_size)
        self.token_embedding.build((None, None))
        self.segment_embedding.build((None, None))
        self.position_embedding.build(hidden_shape)
        self.embedding_layer_norm.build(hidden_shape)
        for layer in self.transformer_layers:
            layer.build(hidden_shape)
        self.pooler.build((None, cfg.hidden_size))
        self.built = True

    def embed(self, input_ids, segment_ids, training=None):
        """Token + segment + position embeddings -> LayerNorm -> dropout."""
        embedded = (self.token_embedding(input_ids) + self.segment_embedding(segment_ids)
                    + self.position_embedding(input_ids))
        return self.embedding_dropout(self.embedding_layer_norm(embedded), training=training)

    def call(self, inputs: Dict, training=None):
        input_ids = inputs["input_ids"]
        segment_ids = inputs.get("segment_ids")
        if segment_ids is None:
            segment_ids = ops.zeros_like(input_ids)
        input_mask = inputs.get("input_mask")
        if input_mask is None:
            input_mask = ops.ones_like(input_ids)
        mask = padding_mask(input_mask)
        if self.config.causal:
            mask = mask * causal_mask(ops.shape(input_ids)[1])
        hidden = self.embed(input_ids, segment_ids, training=training)
        hidden_states = [hidden]
        for layer in self.transformer_layers:
            hidden = layer(hidden, attention_mask=mask, training=training)
            hidden_states.append(hidden)
        return {
            "sequence_output": hidden,
            "pooled_output": self.pooler(hidden[:, 0, :]),
            "hidden_states": hidden_states,
        }

    def get_config(self):
        return {"config": configs.config_to_dict(self.config), "seed": self.seed,
                "name": self.name, "dtype": keras.dtype_policies.serialize(self.dtype_policy)}

    @classmethod
    def from_preset(cls, name: str) -> "BertEncoder":
        """The encoder of a released checkpoint by name ("bert_base_uncased", ...;
        tfmodels/presets.py), fetched and converted on first use, then from the cache."""
        model = _load_preset(name)
        encoder = model.encoder if isinstance(model, BertPretrainer) else model
        if not isinstance(encoder, BertEncoder):
            raise ValueError(f"preset {name} holds a {type(model).__name__}, not a BERT encoder")
        return encoder


def _load_preset(name: str) -> keras.Model:
    from tfmodels.checkpoints.formats import load_checkpoint
    from tfmodels.presets import PRESET_PREFIX
    return load_checkpoint(PRESET_PREFIX + name)


@keras.saving.register_keras_serializable(package="tfmodels")
class BertPretrainer(keras.Model):
    """BERT with its two pretraining heads.

    call(inputs: the encoder's inputs plus `masked_lm_positions` int32 [batch, predictions])
    returns a dict of float32 logits:
      mlm_logits  [batch, predictions, vocab_size]  (decoder tied to the token embedding)
      nsp_logits  [batch, 2]                        (0 = IsNext, 1 = NotNext, as in the paper's
                                                     google-research/bert records)
    plus the encoder's outputs.

    encoder: a BertEncoder, or a config / named size to build one with this model's dtype
      policy and a seed drawn from `seed`, which also seeds the heads (as BertEncoder's).
    """

    def __init__(self, encoder: Union[BertEncoder, dict, str] = "bert_base",
                 seed: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        seeds = SeedStream(seed)
        encoder = configs.resolve_backbone(encoder, BertEncoder, seed=seeds.next(),
                                           dtype=self.dtype_policy)
        self.encoder = encoder
        cfg = encoder.config
        self.mlm_head = MaskedLMHead(
            cfg.vocab_size, layer_norm_epsilon=cfg.layer_norm_epsilon,
            gelu_approximate=cfg.gelu_approximate,
            kernel_initializer=seeds.truncated_normal(cfg.initializer_range),
            dtype=self.dtype_policy, name="mlm_head")
        self.mlm_head.build((None, None, cfg.hidden_size))
        self.nsp_head = keras.layers.Dense(
            2, kernel_initializer=seeds.truncated_normal(cfg.initializer_range),
            dtype=self.dtype_policy, name="nsp_head")
        self.nsp_head.build((None, cfg.hidden_size))
        self.built = True

    @property
    def config(self) -> configs.BertConfig:
        return self.encoder.config

    def call(self, inputs: Dict, training=None):
        outputs = self.encoder(inputs, training=training)
        mlm_logits = self.mlm_head(outputs["sequence_output"], inputs["masked_lm_positions"],
                                   token_embedding=self.encoder.token_embedding)
        nsp_logits = ops.cast(self.nsp_head(outputs["pooled_output"]), "float32")
        return {**outputs, "mlm_logits": mlm_logits, "nsp_logits": nsp_logits}

    def get_config(self):
        return {"encoder": keras.saving.serialize_keras_object(self.encoder), "seed": self.seed,
                "name": self.name, "dtype": keras.dtype_policies.serialize(self.dtype_policy)}

    @classmethod
    def from_preset(cls, name: str, fresh_heads: bool = False,
                    seed: Optional[int] = None) -> "BertPretrainer":
        """A released checkpoint with its MLM / NSP heads (Google's releases keep them).
        A preset without heads (all_minilm_l6_v2) is refused unless `fresh_heads`, which puts
        newly initialised heads (seeded by `seed`) on its encoder."""
        model = _load_preset(name)
        if isinstance(model, BertPretrainer):
            return model
        if isinstance(model, BertEncoder) and fresh_heads:
            return cls(model, seed=seed)
        raise ValueError(f"preset {name} holds a {type(model).__name__} without pretraining "
                         "heads: pass fresh_heads=True for new ones, or use "
                         "BertEncoder.from_preset")


@keras.saving.register_keras_serializable(package="tfmodels")
class BertCausalLM(keras.Model):
    """A causal BERT encoder trained as a left-to-right LM: the "LTR & No NSP" ablation.

    The MLM head's transform (dense -> GELU -> LayerNorm -> tied decoder + bias) runs on every
    position. call(inputs: the encoder's inputs) returns the encoder's outputs plus `logits`:
    float32 [batch, seq, vocab_size], where position t scores token t + 1.
    `encoder` and `seed` as in BertPretrainer.
    """

    def __init__(self, encoder: Union[BertEncoder, dict, str] = "bert_base",
                 seed: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        seeds = SeedStream(seed)
        encoder = configs.resolve_backbone(encoder, BertEncoder, seed=seeds.next(),
                                           dtype=self.dtype_policy)
        if not encoder.config.causal:
            raise ValueError("BertCausalLM needs a causal encoder (BertConfig(causal=True)): "
                             "a bidirectional one sees the token it predicts")
        self.encoder = encoder
        # No loss reads the pooler ([CLS] sees only itself): a None gradient would break
        # all-reduce and clipping.
        encoder.pooler.trainable = False
        cfg = encoder.config
        self.lm_head = MaskedLMHead(
            cfg.vocab_size, layer_norm_epsilon=cfg.layer_norm_epsilon,
            gelu_approximate=cfg.gelu_approximate,
            kernel_initializer=seeds.truncated_normal(cfg.initializer_range),
            dtype=self.dtype_policy, name="lm_head")
        self.lm_head.build((None, None, cfg.hidden_size))
        self.built = True

    @property
    def config(self) -> configs.BertConfig:
        return self.encoder.config

    def call(self, inputs: Dict, training=None):
        outputs = self.encoder(inputs, training=training)
        logits = self.lm_head(outputs["sequence_output"], None,
                              token_embedding=self.encoder.token_embedding)
        return {**outputs, "logits": logits}

    def get_config(self):
        return {"encoder": keras.saving.serialize_keras_object(self.encoder), "seed": self.seed,
                "name": self.name, "dtype": keras.dtype_policies.serialize(self.dtype_policy)}
