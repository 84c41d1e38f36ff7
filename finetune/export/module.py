"""The serving module: a tf.Module holding the model, its tokenizer and the task kind's head,
whose `serving_signatures` are what gets exported (and what tools/predict calls in-process for
a `.keras` model).

Bad requests: bytes that are not UTF-8 are replaced by U+FFFD (then dropped by BERT's
normaliser); an empty string is packed like any text ([CLS] [SEP] / start classify) and gets a
prediction; a batch of zero returns zero rows; long text is truncated to seq_length; a wrong
input name is refused by the signature binding (TF Serving: INVALID_ARGUMENT). The LM signatures
refuse an empty text with "text has no tokens" (there is no position to predict from).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict

import tensorflow as tf

from finetune.export.heads import Head, ServingSpec, real_lengths
from finetune.export.signatures import (DEFAULT_SIGNATURE, IDS_SIGNATURE, PREPROCESS_SIGNATURE,
                                        concrete)
from tfmodels.preprocessing import TextPacker, sanitize_text


class ServingModule(tf.Module):
    """Model + tokenizer + the per-kind head; `serving_signatures` are what gets exported (and what
    tools/predict calls directly for a `.keras` model)."""

    def __init__(self, model, head: Head, tokenizer=None, ids_only: bool = False):
        super().__init__(name="serving")
        self.model = model
        self.head = head
        self.ids_only = ids_only
        self.packer = None if ids_only else TextPacker(
            tokenizer, head.spec.input_format, head.spec.seq_length, head.spec.pad_to_max_length)
        if tokenizer is not None and head.spec.input_format == "gpt":
            # id -> text piece for decoding generated ids, padded to the model's vocabulary.
            pieces = [tokenizer.decoder[i] + ("</w>" if i >= tokenizer.bpe_vocab_size else "")
                      for i in range(tokenizer.vocab_size)]
            pieces += [""] * max(0, head.spec.vocab_size - len(pieces))
            self._pieces = tf.constant(pieces)
        self.serving_signatures = self._build_signatures()

    def _run(self, inputs):
        return self.model(dict(inputs), training=False)

    def serve_ids(self, inputs):
        inputs = {k: tf.cast(v, tf.int32) for k, v in inputs.items()}
        return self.head.decode(self._run(inputs), inputs)

    def serve_text(self, texts):
        texts = {k: sanitize_text(v) for k, v in texts.items()}
        inputs, state = self.head.encode(self.packer, texts)
        return self.head.decode_text(self._run(inputs), inputs, state)

    def preprocess(self, texts):
        """The model inputs serving_default builds from raw text (no model call): what a
        client of serving_ids would send, and what tests compare with the training features."""
        texts = {k: sanitize_text(v) for k, v in texts.items()}
        return self.head.encode(self.packer, texts)[0]

    def generate(self, request):
        """Greedy (top_k <= 1) or top-k sampling of max_new_tokens tokens after each text; a
        full window drops its first token. No KV cache: one full forward pass per token.

        max_new_tokens must be in 0..spec.max_new_tokens_limit: one request cannot hold the
        server for longer than the export allows. A batch of no texts returns no rows."""
        limit = self.head.spec.max_new_tokens_limit
        asked = request["max_new_tokens"]
        check = tf.debugging.assert_equal(
            (asked >= 0) & (asked <= limit), True,
            message=f"max_new_tokens must be in 0..{limit} (this export's "
                    f"max_new_tokens_limit)")
        with tf.control_dependencies([check]):
            asked = tf.identity(asked)
        inputs, _ = self.head.encode(self.packer, {"text": sanitize_text(request["text"])})
        ids, mask = inputs["input_ids"], inputs["input_mask"]
        lengths = real_lengths(inputs)
        seq = self.head.spec.seq_length
        rows = tf.range(tf.shape(ids)[0])
        # No texts, no model call (it would run on an empty batch).
        steps = tf.where(tf.shape(ids)[0] > 0, asked, 0)
        top_k = tf.minimum(request["top_k"], tf.shape(self._pieces)[0])

        def step(t, ids, mask, lengths, out):
            logits = self._run({"input_ids": ids, "input_mask": mask})["logits"]
            last = tf.gather(logits, (lengths - 1)[:, None], batch_dims=1)[:, 0]

            def sample():
                values, indices = tf.math.top_k(last, k=top_k)
                pick = tf.random.stateless_categorical(
                    values, 1, seed=tf.stack([request["seed"], t]), dtype=tf.int32)
                return tf.gather(indices, pick, batch_dims=1)[:, 0]

            token = tf.cond(top_k > 1, sample,
                            lambda: tf.argmax(last, axis=-1, output_type=tf.int32))
            full = lengths >= seq
            ids = tf.where(full[:, None], tf.roll(ids, -1, axis=1), ids)
            lengths = tf.minimum(lengths, seq - 1)
            at = tf.stack([rows, lengths], axis=1)
            ids = tf.tensor_scatter_nd_update(ids, at, token)
            mask = tf.tensor_scatter_nd_update(mask, at, tf.ones_like(token))
            return t + 1, ids, mask, lengths + 1, out.write(t, token)

        out = tf.TensorArray(tf.int32, size=steps, element_shape=[None])
        *_, out = tf.while_loop(lambda t, *_: t < steps, step,
                                (tf.constant(0), ids, mask, lengths, out))
        # An empty TensorArray cannot stack (its element shape is open): no steps, no tokens.
        tokens = tf.cond(steps > 0, lambda: tf.transpose(out.stack()),
                         lambda: tf.zeros([tf.shape(ids)[0], asked], tf.int32))
        text = tf.strings.reduce_join(tf.gather(self._pieces, tokens), axis=1)
        text = tf.strings.strip(tf.strings.regex_replace(text, "</w>", " "))
        return {"token_ids": tokens, "text": text}

    def _build_signatures(self) -> Dict[str, Any]:
        ids = concrete(self.serve_ids, self.head.ids_inputs())
        if self.ids_only:
            return {DEFAULT_SIGNATURE: ids, IDS_SIGNATURE: ids}
        return {DEFAULT_SIGNATURE: concrete(self.serve_text, self.head.text_inputs),
                IDS_SIGNATURE: ids,
                PREPROCESS_SIGNATURE: concrete(self.preprocess, self.head.text_inputs),
                **self.head.extra_signatures(self)}


def serving_spec(task_model, task_spec, seq_length: int, max_query_length: int = 64,
                 max_answer_length: int = 30, max_new_tokens_limit: int = 0) -> ServingSpec:
    """The ServingSpec of a task model (task_spec: finetune.tasks.TaskSpec) or of a
    GptLanguageModel or LstmLanguageModel (GPT-1's LSTM baseline; task_spec None).
    max_new_tokens_limit: the LM's ceiling on one generate request (0: seq_length, the window
    the model reads)."""
    from finetune import kinds
    from finetune.models import TaskModel, backbone_input_format
    from tfmodels.gpt import GptLanguageModel
    from tfmodels.lstm import LstmLanguageModel

    if isinstance(task_model, (GptLanguageModel, LstmLanguageModel)):
        kind, input_format, task = kinds.LANGUAGE_MODEL, "gpt", "language_model"
    elif isinstance(task_model, TaskModel):
        if task_spec is None:
            raise ValueError("a task model needs its task_spec (finetune.tasks.get_task)")
        kind, input_format, task = task_spec.kind, backbone_input_format(task_model), task_spec.name
    else:
        raise TypeError(f"expected a finetune TaskModel, a GptLanguageModel or an "
                        f"LstmLanguageModel, got {type(task_model).__name__}")
    config = task_model.config
    if not 1 <= seq_length <= config.max_positions:
        raise ValueError(f"seq_length must be in 1..{config.max_positions} (the model's "
                         f"positions), got {seq_length}")
    if input_format not in kind.input_formats:
        raise ValueError(f"{kind.name} is a BERT task; GPT-1 has no input transform for it")
    kind.check_serving(seq_length, max_query_length)
    return ServingSpec(
        kind=kind.name, input_format=input_format, seq_length=seq_length, task=task,
        label_names=tuple(task_spec.label_names) if task_spec is not None else (),
        is_pair=bool(task_spec.is_pair) if task_spec is not None else False,
        views=kind.serving_views(task_spec, task_model),
        symmetric=bool(getattr(task_model, "symmetric", False)),
        max_query_length=max_query_length, max_answer_length=max_answer_length,
        vocab_size=config.vocab_size, max_new_tokens_limit=max_new_tokens_limit or seq_length)


def build_serving_module(task_model, task_spec, tokenizer, seq_length: int,
                         ids_only: bool = False, max_query_length: int = 64,
                         max_answer_length: int = 30, pad_to_max_length: bool = False,
                         max_new_tokens_limit: int = 0) -> ServingModule:
    """The module `export_saved_model` saves; its `serving_signatures` are callable in-process."""
    if max_new_tokens_limit < 0:
        raise ValueError(f"max_new_tokens_limit must be >= 0 (0: seq_length), got "
                         f"{max_new_tokens_limit}")
    spec = serving_spec(task_model, task_spec, seq_length, max_query_length, max_answer_length,
                        max_new_tokens_limit)
    spec = dataclasses.replace(spec, pad_to_max_length=pad_to_max_length)
    if not ids_only:
        _check_tokenizer(tokenizer, spec, task_model.config.vocab_size)
    from finetune import kinds
    head = kinds.get_kind(spec.kind).serving_head(spec)
    return ServingModule(task_model, head, tokenizer, ids_only=ids_only)


def _check_tokenizer(tokenizer, spec: ServingSpec, model_vocab: int) -> None:
    if getattr(tokenizer, "family", None) != spec.input_format:
        kind = "WordPieceTokenizer" if spec.input_format == "bert" else "GptBpeTokenizer"
        raise ValueError(f"a {spec.input_format} model serves raw text through a {kind}, got "
                         f"{type(tokenizer).__name__}")
    if tokenizer.vocab_size > model_vocab:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} ids but the model's "
                         f"embedding only {model_vocab}")
