"""Fine-tuning task models: a pretrained backbone (BERT encoder or GPT-1 decoder) plus the
papers' task heads (the losses that train them are in finetune.losses).

One class per task kind serves both architectures. The papers differ only in how a sequence
becomes one vector, so that is the single branch (`TaskModel.encode`):
  BERT   the pooled [CLS] state, tanh(dense(h_[CLS])), pretrained by NSP: the BERT paper's
         GLUE / SWAG setup. With `feature_layers > 1` (the feature-based approach, whose best
         NER setup concatenates the top 4 layers) the [CLS] slice of the concatenation.
         A causal BERT (the "LTR & No NSP" ablation) has a [CLS] that sees only itself: its
         summary is the last real token's state, as for GPT-1, and the pooler is unused.
  GPT-1  the final state at the classify token, h_l^m at `classify_position` (Section 3.2).
         GPT-1's LSTM baseline (tfmodels.lstm.LstmDecoder, Section 5) is fine-tuned exactly
         like GPT-1 ("the same framework"): `backbone_input_format` is "gpt" and
         `backbone_architecture` "lstm"; its aux LM goes through `backbone.lm_logits`.

Heads (all with TruncatedNormal(0.02) kernels, the papers' initialiser):
  SequenceClassifier   dropout(0.1) -> dense(num_labels): GLUE, SNLI, SciTail; `regression`
                       gives one scalar (STS-B). GPT-1 similarity (`symmetric`, MRPC/QQP/STS-B)
                       reads both orders of the pair and SUMS the two classify states before the
                       linear layer (GPT-1 Section 3.3: "added element-wise").
  MultipleChoiceModel  one scalar per candidate, softmaxed over candidates by the loss: BERT's
                       SWAG and GPT-1's Story Cloze / RACE transforms.
  SpanModel            dense(2) on every token -> start / end logits (BERT's SQuAD; no dropout
                       before it, as in google-research/bert `run_squad.py`).
  TokenClassifier      dropout -> dense(num_labels) on every token (BERT's CoNLL-2003 NER).
With `bilstm_layers > 0` a randomly initialised BiLSTM (`bilstm_units` per direction, padding
masked) runs over the features first and every head reads its output, summaries at position 0
(BERT) or the classify position (GPT-1): BERT's "+ BiLSTM" (Table 5) and feature-based NER
(Section 5.3: frozen top-4 layers -> two-layer 768-d BiLSTM -> classifier).

Inputs (finetune.features) — BERT: input_ids, segment_ids, input_mask [b, s]; GPT-1: input_ids,
input_mask [b, s], classify_position [b]. Multiple choice and GPT-1 similarity add a view axis:
[b, k, s] and classify_position [b, k] (similarity may instead come as `*_swapped` keys).

Outputs are float32 whatever the dtype policy: `logits` (classes [b, n], choices [b, k], tags
[b, s, n]), `predictions` (regression, [b]) or `start_logits` / `end_logits` [b, s]. GPT-1
models built with `aux_lm=True` also return `lm_logits` [b, (k,) s, vocab] from the tied token
embedding, for the auxiliary objective L3 = L2 + lambda * L1 (lambda = 0.5) that
`finetune.losses.task_loss` adds.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, NamedTuple, Optional, Union

import keras
from keras import ops

from tfmodels.architectures import input_format
from tfmodels.bert import BertEncoder
from tfmodels.gpt import GptDecoder
from tfmodels.lstm import LstmDecoder
from tfmodels.preprocessing import BERT_INPUT_KEYS, GPT_INPUT_KEYS
from tfmodels.seeding import SeedStream

Backbone = Union[BertEncoder, GptDecoder, LstmDecoder]
_BACKBONES = (BertEncoder, GptDecoder, LstmDecoder)

# Two concepts, two names (tfmodels.architectures; the --model flag and FinetuneConfig.model
# keep the name users type, and hold an architecture):
#   architecture  which network: "bert" | "gpt" | "lstm" (`backbone_architecture`)
#   input_format  which tokenizer, row layout, heads' summary and objectives: "bert" | "gpt"
#                 (`backbone_input_format`, FinetuneConfig.input_format). GPT-1's LSTM baseline
#                 is fine-tuned "using the same framework" (GPT-1 Section 5): GPT-1's BPE,
#                 input transforms and aux LM.
# Every input format is also an architecture name, so a parameter typed `architecture` takes
# either.
# Span logit at padding: far below any real logit, still finite in float32 softmax.
MASKED_LOGIT = -1e9


# ---- backbones --------------------------------------------------------------------------------

def as_backbone(model) -> Backbone:
    """The BertEncoder / GptDecoder / LstmDecoder itself, or the one inside a BertPretrainer,
    GptLanguageModel, LstmLanguageModel, TaskModel or finetune.api model (so a pretraining
    checkpoint or a fine-tuned model.keras can be passed directly)."""
    if isinstance(model, _BACKBONES):
        return model
    for attr in ("backbone", "encoder", "decoder"):
        inner = getattr(model, attr, None)
        if isinstance(inner, _BACKBONES):
            return inner
    task_model = getattr(model, "task_model", None)  # a finetune.api model (a saved model.keras)
    if task_model is not None:
        return as_backbone(task_model)
    raise TypeError(f"expected a BertEncoder, GptDecoder or LstmDecoder (or a model wrapping "
                    f"one), got {type(model).__name__}")


def backbone_architecture(model) -> str:
    """"bert", "gpt" or "lstm" (GPT-1's LSTM baseline): which network it is."""
    backbone = as_backbone(model)
    if isinstance(backbone, BertEncoder):
        return "bert"
    return "lstm" if isinstance(backbone, LstmDecoder) else "gpt"


def backbone_input_format(model) -> str:
    """"bert" or "gpt": the input format and objectives the backbone is fine-tuned with
    (the LSTM baseline is "gpt"). See `backbone_architecture` for the network."""
    return input_format(backbone_architecture(model))


def backbone_lm_logits(backbone, sequence_output):
    """The backbone's tied LM output on its last states (compute dtype): `lm_logits` when the
    backbone has one (GptDecoder, LstmDecoder), else the token embedding's transpose."""
    if hasattr(backbone, "lm_logits"):
        return backbone.lm_logits(sequence_output)
    return backbone.token_embedding(sequence_output, reverse=True)


def stack_views(inputs: Mapping) -> Dict:
    """GPT-1 similarity given as `key` [b, s] + `key_swapped` [b, s] -> `key` [b, 2, s].

    Inputs without `input_ids_swapped` (already [b, 2, s], or single views) pass unchanged.
    """
    if "input_ids_swapped" not in inputs:
        return dict(inputs)
    stacked = dict(inputs)
    for key in GPT_INPUT_KEYS:
        if key not in inputs:
            continue
        if f"{key}_swapped" not in inputs:
            raise KeyError(f"inputs have input_ids_swapped and {key} but no {key}_swapped")
        stacked[key] = ops.stack([inputs[key], inputs[f"{key}_swapped"]], axis=1)
    return stacked


def gather_positions(sequence, positions):
    """sequence [n, s, h], positions int [n] -> [n, h]: row i's vector at positions[i]."""
    index = ops.cast(positions, "int32")[:, None, None]
    return ops.take_along_axis(sequence, index, axis=1)[:, 0, :]


def _flatten_views(inputs: Mapping, keys) -> tuple:
    """Keeps the model's input keys; [b, k, s] / [b, k] -> [b*k, s] / [b*k].

    Returns (flat inputs, k or None). The view count must be static (it is a head shape).
    """
    ids = inputs["input_ids"]
    if len(ids.shape) not in (2, 3):
        raise ValueError(f"input_ids must be [batch, seq] or [batch, views, seq], got {ids.shape}")
    views = ids.shape[1] if len(ids.shape) == 3 else None
    flat = {}
    for key in keys:
        value = inputs.get(key)
        if value is None:
            continue
        if views is not None:
            value = ops.reshape(value, (-1,) if key == "classify_position"
                                else (-1, ops.shape(value)[-1]))
        flat[key] = value
    return flat, views


class Encoded(NamedTuple):
    """What every head reads from the backbone, on inputs flattened to n = batch (* views)."""

    inputs: Dict            # the model's input tensors, flattened
    features: object        # [n, s, hidden * feature_layers] (2 * bilstm_units with a BiLSTM)
    summary: object         # [n, same]: pooled [CLS] (BiLSTM: position 0) or GPT classify state
    lm_logits: object       # float32 [n, s, vocab] (GPT with aux_lm) or None
    views: Optional[int]    # k of a [b, k, s] input, None for [b, s]


# ---- task models ------------------------------------------------------------------------------

class TaskModel(keras.Model):
    """Backbone + head. Subclasses build their Dense layers with `_dense` and call `encode`.

    backbone: BertEncoder / GptDecoder (or a model wrapping one, see `as_backbone`), or its
      serialised config (when loading a `.keras` file).
    feature_layers: how many of the top hidden states to concatenate (1 = last layer only).
    dropout: rate of the dropout before the output layer ("classifier dropout", 0.1 in both).
    aux_lm: GPT-1 only; also return `lm_logits` for the auxiliary LM loss.
    bilstm_layers, bilstm_units: a randomly initialised BiLSTM stack (0 = none) between the
      features and the head, `bilstm_units` per direction; it is not part of the backbone, so
      it trains under every strategy (frozen included). cuDNN is not used (use_cudnn=False):
      its kernel asserts right-padded, non-empty masks and does not compile under XLA.

    A frozen backbone (`backbone.trainable = False`, see finetune.freezing) runs in inference
    mode: frozen features are fixed features, as when BERT's were extracted once for NER.
    Backbone layers the head never reads (`unused_backbone_layers`) are frozen here and by
    every strategy: they would get None gradients, which break gradient all-reduce and clipping.
    """

    reads_summary = True  # whether the head reads the per-sequence vector (else per-token)

    def __init__(self, backbone, feature_layers: int = 1, dropout: float = 0.1,
                 aux_lm: bool = False, bilstm_layers: int = 0, bilstm_units: int = 768,
                 seed: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        # The head's own initializers and dropout, each with a distinct seed from `seed`.
        self._seeds = SeedStream(seed)
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        self.backbone = as_backbone(backbone)
        self.input_format = backbone_input_format(self.backbone)
        cfg = self.backbone.config
        if not 1 <= feature_layers <= cfg.num_layers + 1:
            raise ValueError(f"feature_layers must be in 1..{cfg.num_layers + 1} (the embeddings "
                             f"and {cfg.num_layers} layers), got {feature_layers}")
        if aux_lm and self.input_format != "gpt":
            raise ValueError("aux_lm is GPT-1's auxiliary language-modelling objective; "
                             "a BERT backbone has no causal LM")
        self.feature_layers = feature_layers
        self.dropout_rate = dropout
        self.aux_lm = aux_lm
        # hidden_states widths: all hidden_size, except the LSTM's embeddings (embedding_size).
        sizes = (getattr(self.backbone, "hidden_state_sizes", None)
                 or (cfg.hidden_size,) * (cfg.num_layers + 1))
        self.feature_size = sum(sizes[-feature_layers:])
        if bilstm_layers < 0 or bilstm_units < 1:
            raise ValueError(f"bilstm_layers must be >= 0 and bilstm_units >= 1, got "
                             f"{bilstm_layers} and {bilstm_units}")
        self.bilstm_layers = bilstm_layers
        self.bilstm_units = bilstm_units
        self.bilstm = [self._bilstm_layer(i) for i in range(bilstm_layers)]
        # What the heads read: the features, or the BiLSTM's two directions concatenated.
        self.head_input_size = 2 * bilstm_units if bilstm_layers else self.feature_size
        self.head_dropout = keras.layers.Dropout(dropout, seed=self._seeds.next(),
                                                 dtype=self.dtype_policy,
                                                 name="classifier_dropout")
        for layer in self.unused_backbone_layers:
            layer.trainable = False

    @property
    def unused_backbone_layers(self) -> List[keras.layers.Layer]:
        """BERT's pooler unless the head reads the pooled vector (span and token heads,
        feature_layers > 1 and a BiLSTM read the hidden states); the LSTM baseline's
        `lm_projection` without aux_lm."""
        if self.input_format == "bert" and not (self.reads_summary and self.feature_layers == 1
                                              and not self.bilstm_layers
                                              and not self.config.causal):
            return [self.backbone.pooler]
        if not self.aux_lm and isinstance(self.backbone, LstmDecoder):
            # The LSTM's projection to the tied embedding only feeds its LM output.
            return [self.backbone.lm_projection]
        return []

    @property
    def config(self):
        """The backbone's model config."""
        return self.backbone.config

    def _dense(self, units: int, name: str) -> keras.layers.Dense:
        init = self._seeds.truncated_normal(self.config.initializer_range)
        layer = keras.layers.Dense(units, kernel_initializer=init, dtype=self.dtype_policy,
                                   name=name)
        # Built now, like the backbones, so weights can be restored without a forward pass.
        layer.build((None, self.head_input_size))
        self.built = True
        return layer

    def _bilstm_layer(self, index: int) -> keras.layers.Bidirectional:
        """One BiLSTM layer (Keras' default initialisers, seeded), built now like the heads."""
        def lstm(prefix: str, go_backwards: bool) -> keras.layers.LSTM:
            # Each direction its own seeds: Keras would clone the forward layer's (seeded)
            # initializers for the backward one, and both would start equal.
            seeds = self._seeds
            return keras.layers.LSTM(
                self.bilstm_units, return_sequences=True, use_cudnn=False,
                go_backwards=go_backwards, kernel_initializer=seeds.glorot_uniform(),
                recurrent_initializer=seeds.orthogonal(), seed=seeds.next(),
                dtype=self.dtype_policy, name=f"{prefix}bilstm_{index}_lstm")

        layer = keras.layers.Bidirectional(
            lstm("", False), backward_layer=lstm("backward_", True), merge_mode="concat",
            dtype=self.dtype_policy, name=f"bilstm_{index}")
        width = self.feature_size if index == 0 else 2 * self.bilstm_units
        layer.build((None, None, width))
        return layer

    def _run_bilstm(self, features, input_mask, training=None):
        """features [n, s, f] -> [n, s, 2 * bilstm_units]. Masked steps neither update the
        state nor emit (their outputs are zero), so the backward direction starts at each row's
        last real token and padding changes nothing at real positions."""
        mask = None if input_mask is None else ops.cast(input_mask, "bool")
        for layer in self.bilstm:
            features = layer(features, mask=mask, training=training)
        return features

    def _project(self, layer, x, training=None):
        """dropout -> dense -> float32 (logits stay float32 under mixed precision)."""
        return ops.cast(layer(self.head_dropout(x, training=training)), "float32")

    def encode(self, inputs: Mapping, training=None) -> Encoded:
        """Runs the backbone on [b, s] or [b, k, s] inputs (see `Encoded`)."""
        keys = BERT_INPUT_KEYS if self.input_format == "bert" else GPT_INPUT_KEYS
        flat, views = _flatten_views(inputs, keys)
        backbone_inputs = {k: v for k, v in flat.items() if k != "classify_position"}
        outputs = self.backbone(backbone_inputs,
                                training=training if self.backbone.trainable else False)
        if self.feature_layers == 1:
            features = outputs["sequence_output"]
        else:
            features = ops.concatenate(outputs["hidden_states"][-self.feature_layers:], axis=-1)
        if self.bilstm_layers:
            features = self._run_bilstm(features, flat.get("input_mask"), training)
        if self.input_format == "bert" and not self.config.causal:
            pooled = self.feature_layers == 1 and not self.bilstm_layers
            summary = outputs["pooled_output"] if pooled else features[:, 0]
        else:
            summary = gather_positions(features, self._classify_position(flat))
        lm_logits = None
        if self.aux_lm:
            lm_logits = ops.cast(backbone_lm_logits(self.backbone, outputs["sequence_output"]),
                                 "float32")
        return Encoded(flat, features, summary, lm_logits, views)

    @staticmethod
    def _classify_position(flat: Mapping):
        """`classify_position`, else the last real token (where the GPT-1 transforms put it)."""
        if flat.get("classify_position") is not None:
            return flat["classify_position"]
        if flat.get("input_mask") is not None:
            return ops.sum(ops.cast(flat["input_mask"], "int32"), axis=-1) - 1
        ids = flat["input_ids"]
        return ops.full((ops.shape(ids)[0],), ops.shape(ids)[1] - 1, dtype="int32")

    def _finish(self, outputs: Dict, encoded: Encoded) -> Dict:
        """Adds `lm_logits`, reshaped back to the input's [b, (k,) s, vocab]."""
        if encoded.lm_logits is not None:
            lm = encoded.lm_logits
            if encoded.views is not None:
                lm = ops.reshape(lm, (-1, encoded.views) + tuple(ops.shape(lm)[1:]))
            outputs["lm_logits"] = lm
        return outputs

    def _require_views(self, encoded: Encoded, expected: Optional[int], what: str) -> None:
        """expected: None (inputs [b, s]), a view count k, or -1 (any k)."""
        if expected is None and encoded.views is not None:
            raise ValueError(f"{type(self).__name__} reads [batch, seq] inputs, got a view axis "
                             f"of {encoded.views} ({what})")
        if expected is not None and encoded.views is None:
            raise ValueError(f"{type(self).__name__} reads [batch, views, seq] inputs ({what})")
        if expected not in (None, -1) and encoded.views != expected:
            raise ValueError(f"{type(self).__name__} needs {expected} views ({what}), "
                             f"got {encoded.views}")

    def get_config(self):
        return {"backbone": keras.saving.serialize_keras_object(self.backbone),
                "feature_layers": self.feature_layers, "dropout": self.dropout_rate,
                "aux_lm": self.aux_lm, "bilstm_layers": self.bilstm_layers,
                "bilstm_units": self.bilstm_units, "seed": self.seed, "name": self.name,
                "dtype": keras.dtype_policies.serialize(self.dtype_policy)}


@keras.saving.register_keras_serializable(package="finetune")
class SequenceClassifier(TaskModel):
    """Whole-sequence classification or regression.

    call(inputs) -> {"logits": float32 [b, num_labels]} or, with `regression`,
    {"predictions": float32 [b]}; plus `lm_logits` with aux_lm.
    symmetric (GPT-1 similarity): inputs [b, 2, s] (both orders of the pair); the two classify
    states are summed, so the output does not depend on the order.
    """

    def __init__(self, backbone, num_labels: int, regression: bool = False,
                 symmetric: bool = False, **kwargs):
        super().__init__(backbone, **kwargs)
        if num_labels < 1 or (regression and num_labels != 1):
            raise ValueError(f"num_labels must be >= 1 (exactly 1 for regression), got {num_labels}")
        if symmetric and self.input_format != "gpt":
            raise ValueError("symmetric is GPT-1's similarity transform; BERT reads a pair once "
                             "with attention across both texts")
        self.num_labels = num_labels
        self.regression = regression
        self.symmetric = symmetric
        self.classifier = self._dense(num_labels, "classifier")

    def call(self, inputs: Mapping, training=None) -> Dict:
        if self.symmetric:
            inputs = stack_views(inputs)
        encoded = self.encode(inputs, training=training)
        summary = encoded.summary
        if self.symmetric:
            self._require_views(encoded, 2, "the two orders of the pair")
            summary = ops.sum(ops.reshape(summary, (-1, 2, self.head_input_size)), axis=1)
        else:
            self._require_views(encoded, None, "one sequence per example")
        logits = self._project(self.classifier, summary, training)
        outputs = {"predictions": logits[:, 0]} if self.regression else {"logits": logits}
        return self._finish(outputs, encoded)

    def get_config(self):
        return {**super().get_config(), "num_labels": self.num_labels,
                "regression": self.regression, "symmetric": self.symmetric}


@keras.saving.register_keras_serializable(package="finetune")
class MultipleChoiceModel(TaskModel):
    """One scalar per candidate sequence.

    call(inputs [b, k, s], classify_position [b, k] for GPT-1) -> {"logits": float32 [b, k]}
    (softmax over k is the candidates' distribution), plus `lm_logits` [b, k, s, vocab].
    """

    def __init__(self, backbone, **kwargs):
        super().__init__(backbone, **kwargs)
        self.classifier = self._dense(1, "classifier")

    def call(self, inputs: Mapping, training=None) -> Dict:
        encoded = self.encode(inputs, training=training)
        self._require_views(encoded, -1, "one sequence per candidate")
        scores = self._project(self.classifier, encoded.summary, training)  # [b * k, 1]
        return self._finish({"logits": ops.reshape(scores, (-1, encoded.views))}, encoded)


@keras.saving.register_keras_serializable(package="finetune")
class SpanModel(TaskModel):
    """Answer-span extraction: a start and an end vector dotted with every token.

    call(inputs [b, s]) -> {"start_logits", "end_logits": float32 [b, s]}, padding positions
    (input_mask 0) set to MASKED_LOGIT so no span starts or ends there.
    """

    reads_summary = False

    def __init__(self, backbone, dropout: float = 0.0, **kwargs):
        super().__init__(backbone, dropout=dropout, **kwargs)
        self.span_classifier = self._dense(2, "span_classifier")

    def call(self, inputs: Mapping, training=None) -> Dict:
        encoded = self.encode(inputs, training=training)
        self._require_views(encoded, None, "one window per row")
        logits = self._project(self.span_classifier, encoded.features, training)  # [b, s, 2]
        start, end = logits[..., 0], logits[..., 1]
        mask = encoded.inputs.get("input_mask")
        if mask is not None:
            real = ops.cast(mask, "bool")
            start = ops.where(real, start, MASKED_LOGIT)
            end = ops.where(real, end, MASKED_LOGIT)
        return self._finish({"start_logits": start, "end_logits": end}, encoded)


@keras.saving.register_keras_serializable(package="finetune")
class TokenClassifier(TaskModel):
    """A label per token (NER tags; the features label only each word's first sub-token).

    call(inputs [b, s]) -> {"logits": float32 [b, s, num_labels]}.
    """

    reads_summary = False

    def __init__(self, backbone, num_labels: int, **kwargs):
        super().__init__(backbone, **kwargs)
        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}")
        self.num_labels = num_labels
        self.classifier = self._dense(num_labels, "classifier")

    def call(self, inputs: Mapping, training=None) -> Dict:
        encoded = self.encode(inputs, training=training)
        self._require_views(encoded, None, "one sentence per row")
        logits = self._project(self.classifier, encoded.features, training)
        return self._finish({"logits": logits}, encoded)

    def get_config(self):
        return {**super().get_config(), "num_labels": self.num_labels}


def build_task_model(task_spec, backbone, architecture: Optional[str] = None,
                     **options) -> TaskModel:
    """The head of `task_spec.kind` on `backbone` (the kind decides which TaskModel).

    architecture: "bert" | "gpt" | "lstm", or the backbone's input format ("gpt" for the LSTM);
      checked against the backbone (inferred when None).
    options: feature_layers, dropout, bilstm_layers, bilstm_units, name, dtype, seed; GPT-1
      also aux_lm (default True, the paper) and symmetric (default: the task's `similarity`).
    """
    backbone = as_backbone(backbone)
    actual = backbone_input_format(backbone)
    if architecture is not None and architecture not in (actual, backbone_architecture(backbone)):
        raise ValueError(f"architecture {architecture!r} does not match the backbone, "
                         f"a {type(backbone).__name__} ({actual!r})")
    options.setdefault("name", task_spec.name)
    if actual == "gpt":
        options.setdefault("aux_lm", True)
    return task_spec.kind.build_model(task_spec, backbone, **options)
