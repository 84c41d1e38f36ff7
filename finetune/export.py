"""SavedModels for TF Serving: a fine-tuned task model (or the GPT-1 LM) plus its tokenizer,
exported so that raw text goes in and named, decoded predictions come out.

Text becomes model inputs through finetune.text_inputs / tfmodels.preprocessing, the in-graph
code the fine-tuning features also run, traced into the SavedModel: a client sends strings and
gets labels, answers or tags back, from exactly the rows the model was fine-tuned on. Rows are
padded only to the longest of each request (at most seq_length), so a short sentence does not
pay for seq_length positions.

Layout (what TF Serving's file-system source polls):

    <export_base>/<model_name>/<version>/
        saved_model.pb, variables/
        assets/          the tokenizer's vocabulary (vocab.txt; GPT-1: vocab.json, merges.txt)
        assets.extra/    tf_serving_warmup_requests (one PredictionLog per signature),
                         ops.json (op audit), export.json (task, kind, seq_length, signatures)

Versions are integers, never overwritten: each export writes `.tmp-<version>-<id>` beside them
and renames it to the next free version at the end, so a failed export leaves nothing behind
and a server never sees a half-written version.

Signatures (`serving_default` takes raw strings, `serving_ids` pre-tokenised int32 ids):
  kind                  serving_default inputs             outputs (both signatures unless noted)
  classification        text | text_a, text_b               class_ids, labels, probabilities
  regression (STS-B)    text_a, text_b                      score
  multiple_choice       context, question [b], endings [b,c] choice, probabilities
  span (SQuAD)          question, context                   text: answer, start, end (character
                                                            offsets into context), score;
                                                            ids: start_token, end_token, score
  token_classification  sentence (words as str.split())     text: tags [b, words] ("" padded),
                                                            num_words; ids: tag_ids, tags [b, s]
  language_model        text                                next_token_log_probs [b, V],
                                                            num_tokens; `generate` (text,
                                                            max_new_tokens, top_k, seed) ->
                                                            token_ids, text
  every kind but the LM  `preprocess`: the same text inputs -> the model inputs serving_default
                        builds (what serving_ids takes)
serving_ids inputs: BERT input_ids, segment_ids, input_mask; GPT-1 input_ids, input_mask and
(task models) classify_position; int32 [b, (views,) w] for any width w <= seq_length, padded at
the end (the LM: exactly seq_length, which generation fills).
Its graph holds only core TensorFlow ops, so stock TF Serving serves it; `ids_only=True` exports
nothing else (and aliases it as serving_default). The raw-text signatures need the
tensorflow-text kernels in the server; `audit_ops` lists the ops that do (BUILD_NOTES.md,
"Serving: custom ops").

Differences from the fine-tuning features, by design:
- SQuAD is served on ONE window: the question (max_query_length pieces) and the first
  seq_length - len(question) - 3 context pieces; a longer context is cut, not strided (for
  long contexts, send windows yourself or use finetune.features + serving_ids).
  Character offsets are exact for words whose normalised form keeps its UTF-8 length (all
  ASCII); other words map each piece to the whole word's span (the original run_squad
  granularity), so an answer inside such a word comes back as the whole word.
- The GPT-1 LM keeps the LAST seq_length tokens of a long text (the context nearest the
  next token); task models truncate longest-first from the end, as the encoders do.

Bad requests: bytes that are not UTF-8 are replaced by U+FFFD (then dropped by BERT's
normaliser); an empty string is packed like any text ([CLS] [SEP] / start classify) and gets a
prediction; a batch of zero returns zero rows; long text is truncated to seq_length; a wrong
input name is refused by the signature binding (TF Serving: INVALID_ARGUMENT). The LM signatures
refuse an empty text with "text has no tokens" (there is no position to predict from).

Vocabularies are embedded in the graph as constants by both tokenizers (FastBertTokenizer's
model buffer, GptBpeTokenizer's hash-table initialisers), not read from assets/; the files in
assets/ are written from the tokenizer so clients of serving_ids tokenise with the same vocab.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from finetune.text_inputs import pack_choices, pack_texts, pack_words
from tfmodels.preprocessing import TextPacker, first_n, sanitize_text, whitespace_words
from tfmodels.tokenizers.loading import load_tokenizer

DEFAULT_SIGNATURE = "serving_default"
IDS_SIGNATURE = "serving_ids"
GENERATE_SIGNATURE = "generate"
PREPROCESS_SIGNATURE = "preprocess"
LM_KIND = "language_model"
OUTSIDE_TAG = "O"       # NER tag of words truncated away (finetune.features.tokens)
EXPORT_INFO = "export.json"
OPS_FILE = "ops.json"
WARMUP_FILE = "tf_serving_warmup_requests"
TEXT = tf.TensorSpec([None], tf.string)


# ---- what each task kind serves ----------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ServingSpec:
    """Static facts the signature builders need."""

    kind: str
    model_type: str                     # "bert" | "gpt"
    seq_length: int
    task: str = ""
    label_names: Tuple[str, ...] = ()
    is_pair: bool = False
    views: Optional[int] = None         # candidates (multiple choice) or 2 (GPT-1 similarity)
    symmetric: bool = False
    max_query_length: int = 64
    max_answer_length: int = 30
    vocab_size: int = 0                 # the model's output vocabulary (LM)
    pad_to_max_length: bool = False     # every request seq_length wide (else its longest row)


class Head:
    """How one task kind is served. Subclasses set `text_inputs` and override `encode` /
    `decode` (and `decode_text` where text gives more than ids, e.g. SQuAD char offsets)."""

    text_inputs: Dict[str, tf.TensorSpec] = {}

    def __init__(self, spec: ServingSpec):
        self.spec = spec

    def ids_inputs(self) -> Dict[str, tf.TensorSpec]:
        s = self.spec
        lead = [None] if s.views is None else [None, s.views]
        # Any width up to seq_length: a client may pad a batch only to its longest row. The LM
        # keeps seq_length (generation appends into the window).
        seq = tf.TensorSpec(lead + [s.seq_length if s.kind == LM_KIND else None], tf.int32)
        if s.model_type == "bert":
            return {"input_ids": seq, "segment_ids": seq, "input_mask": seq}
        specs = {"input_ids": seq, "input_mask": seq}
        if s.kind != LM_KIND:
            specs["classify_position"] = tf.TensorSpec(lead, tf.int32)
        return specs

    def encode(self, packer: TextPacker, texts: Mapping[str, tf.Tensor]):
        """Sanitised text inputs -> (model inputs, state for decode_text)."""
        raise NotImplementedError

    def decode(self, outputs: Mapping, inputs: Mapping) -> Dict[str, tf.Tensor]:
        raise NotImplementedError

    def decode_text(self, outputs: Mapping, inputs: Mapping, state) -> Dict[str, tf.Tensor]:
        return self.decode(outputs, inputs)

    def extra_signatures(self, module: "ServingModule") -> Dict[str, Any]:
        """Further signatures (name -> concrete function) beyond serving_default / serving_ids."""
        return {}


def _class_outputs(logits: tf.Tensor, label_names: Sequence[str]) -> Dict[str, tf.Tensor]:
    class_ids = tf.argmax(logits, axis=-1, output_type=tf.int32)
    return {"class_ids": class_ids, "labels": tf.gather(tf.constant(list(label_names)), class_ids),
            "probabilities": tf.nn.softmax(logits, axis=-1)}


class SequenceHead(Head):
    """Classification and regression of one text or a pair (GPT-1 similarity: both orders)."""

    @property
    def text_inputs(self):
        return {"text_a": TEXT, "text_b": TEXT} if self.spec.is_pair else {"text": TEXT}

    def encode(self, packer, texts):
        if not self.spec.is_pair:
            return pack_texts(packer, packer.tokenize(texts["text"])), None
        return pack_texts(packer, packer.tokenize(texts["text_a"]),
                          packer.tokenize(texts["text_b"]), self.spec.symmetric), None

    def decode(self, outputs, inputs):
        if self.spec.kind == "regression":
            return {"score": outputs["predictions"]}
        return _class_outputs(outputs["logits"], self.spec.label_names)


class ChoiceHead(Head):
    """One row per candidate ending: BERT `[CLS] context [SEP] question ending [SEP]`, GPT-1
    `start context question delimiter ending classify` (finetune.features.sequence)."""

    @property
    def text_inputs(self):
        return {"context": TEXT, "question": TEXT,
                "endings": tf.TensorSpec([None, self.spec.views], tf.string)}

    def encode(self, packer, texts):
        endings = packer.tokenize(tf.reshape(texts["endings"], [-1]))
        return pack_choices(packer, packer.tokenize(texts["context"]),
                            packer.tokenize(texts["question"]), endings, self.spec.views), None

    def decode(self, outputs, inputs):
        logits = outputs["logits"]
        return {"choice": tf.argmax(logits, axis=-1, output_type=tf.int32),
                "probabilities": tf.nn.softmax(logits, axis=-1)}


def best_span_graph(start_logits, end_logits, context_mask, max_answer_length: int):
    """Best (i, j) with i <= j < i + max_answer_length, both context tokens, maximising
    start[i] + end[j] (ties: the earliest i, then j, as `best_span`). Returns int32 i, j [b]
    and float32 score [b] (-inf when the row has no context token)."""
    s = tf.shape(start_logits)[1]
    i, j = tf.range(s)[:, None], tf.range(s)[None, :]
    valid = ((j >= i) & (j - i < max_answer_length))[None] \
        & context_mask[:, :, None] & context_mask[:, None, :]
    scores = tf.where(valid, start_logits[:, :, None] + end_logits[:, None, :], -np.inf)
    flat = tf.reshape(scores, [-1, s * s])
    best = tf.argmax(flat, axis=1, output_type=tf.int32)
    return best // s, best % s, tf.reduce_max(flat, axis=1)


class SpanHead(Head):
    """SQuAD on one window; answers are cut from the context's characters."""

    text_inputs = {"question": TEXT, "context": TEXT}

    def encode(self, packer, texts):
        tokenizer = packer.tokenizer
        question = packer.tokenize(texts["question"])[:, :self.spec.max_query_length]
        context = texts["context"]
        # Words as run_squad's doc_tokens; pieces with byte offsets inside each word.
        words, word_start, word_end = whitespace_words(context)
        flat = words.flat_values
        normal = tokenizer.normalize(flat)
        pieces, piece_start, piece_end = tokenizer.tokenize_with_offsets(normal, normalized=True)
        # Offsets are into the normalised word: exact when normalising kept its byte length.
        exact = tf.strings.length(normal) == tf.strings.length(flat)
        exact_rows = tf.gather(exact, pieces.value_rowids())
        base = tf.gather(tf.cast(word_start.flat_values, tf.int64), pieces.value_rowids())
        limit = tf.gather(tf.cast(word_end.flat_values, tf.int64), pieces.value_rowids())
        char_start = tf.where(exact_rows, base + tf.cast(piece_start.flat_values, tf.int64), base)
        char_end = tf.where(exact_rows, base + tf.cast(piece_end.flat_values, tf.int64), limit)
        splits = tf.gather(pieces.row_splits, words.row_splits)
        ids = tf.cast(tf.RaggedTensor.from_row_splits(pieces.flat_values, splits), tf.int32)
        starts = tf.RaggedTensor.from_row_splits(char_start, splits)
        ends = tf.RaggedTensor.from_row_splits(char_end, splits)
        window = self.spec.seq_length - tf.cast(question.row_lengths(), tf.int32) - 3
        ids, starts, ends = (first_n(x, window) for x in (ids, starts, ends))
        packed = packer.pack([question, ids], truncate=False)
        shape = [None, self.spec.seq_length]
        offset = tf.cast(question.row_lengths(), tf.int32) + 2
        return packer.model_inputs(packed), (context, offset, starts.to_tensor(0, shape=shape),
                                             ends.to_tensor(0, shape=shape))

    @staticmethod
    def context_mask(inputs) -> tf.Tensor:
        """Context tokens: segment 1, real, before the final [SEP]."""
        mask = inputs["input_mask"] > 0
        last = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1, keepdims=True) - 1
        return (inputs["segment_ids"] > 0) & mask & (tf.range(tf.shape(mask)[1])[None] < last)

    def _best(self, outputs, inputs):
        return best_span_graph(outputs["start_logits"], outputs["end_logits"],
                               self.context_mask(inputs), self.spec.max_answer_length)

    def decode(self, outputs, inputs):
        i, j, score = self._best(outputs, inputs)
        found = score > -np.inf
        return {"start_token": tf.where(found, i, -1), "end_token": tf.where(found, j, -1),
                "score": score}

    def decode_text(self, outputs, inputs, state):
        context, offset, starts, ends = state
        i, j, score = self._best(outputs, inputs)
        found = score > -np.inf
        piece = lambda table, k: tf.gather(table, tf.maximum(k - offset, 0)[:, None],
                                           batch_dims=1)[:, 0]
        byte_start = tf.where(found, piece(starts, i), 0)
        byte_end = tf.where(found, piece(ends, j), 0)
        answer = tf.strings.substr(context, byte_start, byte_end - byte_start)
        prefix = tf.strings.substr(context, tf.zeros_like(byte_start), byte_start)
        start = tf.strings.length(prefix, unit="UTF8_CHAR")
        end = start + tf.strings.length(answer, unit="UTF8_CHAR")
        return {"answer": answer, "start": tf.where(found, start, -1),
                "end": tf.where(found, end, -1), "score": score}


class TaggerHead(Head):
    """NER: whitespace words, each WordPiece-tokenised on its own, the tag read at its first
    piece; words past seq_length get "O" (finetune.features.tokens)."""

    text_inputs = {"sentence": TEXT}

    def encode(self, packer, texts):
        words = whitespace_words(texts["sentence"])[0]
        inputs, position = pack_words(packer, words, packer.tokenizer.unk_id)
        return inputs, (words, position.flat_values)

    def decode(self, outputs, inputs):
        tag_ids = tf.argmax(outputs["logits"], axis=-1, output_type=tf.int32)
        return {"tag_ids": tag_ids, "tags": tf.gather(tf.constant(self.spec.label_names), tag_ids)}

    def decode_text(self, outputs, inputs, state):
        words, position = state
        tag_ids = tf.argmax(outputs["logits"], axis=-1, output_type=tf.int32)
        kept = position < self.spec.seq_length - 1
        # Rows are only as wide as the request's longest: kept positions are inside their row.
        at = tf.stack([tf.cast(words.value_rowids(), tf.int32),
                       tf.minimum(position, tf.shape(tag_ids)[1] - 1)], axis=1)
        names = tf.gather(tf.constant(self.spec.label_names), tf.gather_nd(tag_ids, at))
        tags = words.with_flat_values(tf.where(kept, names, OUTSIDE_TAG))
        return {"tags": tags.to_tensor(""), "num_words": tf.cast(words.row_lengths(), tf.int32)}


def _last_real(inputs) -> tf.Tensor:
    """Number of real tokens per row, checked positive (the LM predicts from the last one)."""
    lengths = tf.reduce_sum(tf.cast(inputs["input_mask"] > 0, tf.int32), axis=1)
    check = tf.debugging.assert_positive(lengths, message="text has no tokens: the language "
                                         "model needs at least one token to predict from")
    with tf.control_dependencies([check]):
        return tf.identity(lengths)


class LanguageModelHead(Head):
    """GPT-1 LM: the next-token distribution after the text, and greedy / top-k generation."""

    text_inputs = {"text": TEXT}

    def encode(self, packer, texts):
        ids = packer.tokenize(texts["text"])
        lengths = tf.cast(ids.row_lengths(), tf.int32)
        drop = tf.maximum(lengths - self.spec.seq_length, 0)
        position = tf.ragged.range(ids.row_lengths())
        ids = tf.ragged.boolean_mask(ids, position >= tf.cast(drop, position.dtype)[:, None])
        shape = [None, self.spec.seq_length]
        return {"input_ids": ids.to_tensor(0, shape=shape),
                "input_mask": tf.ones_like(ids).to_tensor(0, shape=shape)}, None

    def decode(self, outputs, inputs):
        lengths = _last_real(inputs)
        logits = tf.gather(outputs["logits"], (lengths - 1)[:, None], batch_dims=1)[:, 0]
        return {"next_token_log_probs": tf.nn.log_softmax(logits, axis=-1),
                "num_tokens": lengths}

    def extra_signatures(self, module):
        specs = {"text": TEXT, "max_new_tokens": tf.TensorSpec([], tf.int32),
                 "top_k": tf.TensorSpec([], tf.int32), "seed": tf.TensorSpec([], tf.int32)}
        return {GENERATE_SIGNATURE: _concrete(module.generate, specs)}


HEADS: Dict[str, Callable[[ServingSpec], Head]] = {
    "classification": SequenceHead,
    "regression": SequenceHead,
    "multiple_choice": ChoiceHead,
    "span": SpanHead,
    "token_classification": TaggerHead,
    LM_KIND: LanguageModelHead,
}


# ---- the exported module ----------------------------------------------------------------------

def _concrete(fn: Callable[[Dict], Dict], specs: Mapping[str, tf.TensorSpec]):
    """A concrete function whose signature inputs are named like `specs`' keys."""
    specs = {k: tf.TensorSpec(v.shape, v.dtype, name=k) for k, v in specs.items()}
    return tf.function(lambda **inputs: fn(inputs), autograph=False).get_concrete_function(**specs)


class ServingModule(tf.Module):
    """Model + tokenizer + the per-kind head; `serving_signatures` are what gets exported (and what
    tools/predict calls directly for a `.keras` model)."""

    def __init__(self, model, head: Head, tokenizer=None, ids_only: bool = False):
        super().__init__(name="serving")
        self.model = model
        self.head = head
        self.ids_only = ids_only
        self.packer = None if ids_only else TextPacker(
            tokenizer, head.spec.model_type, head.spec.seq_length, head.spec.pad_to_max_length)
        if tokenizer is not None and head.spec.model_type == "gpt":
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
        full window drops its first token. No KV cache: one full forward pass per token."""
        inputs, _ = self.head.encode(self.packer, {"text": sanitize_text(request["text"])})
        ids, mask = inputs["input_ids"], inputs["input_mask"]
        lengths = _last_real(inputs)
        seq = self.head.spec.seq_length
        rows = tf.range(tf.shape(ids)[0])
        steps = tf.maximum(request["max_new_tokens"], 0)
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
        tokens = tf.reshape(tf.transpose(out.stack()), tf.stack([tf.shape(ids)[0], steps]))
        text = tf.strings.reduce_join(tf.gather(self._pieces, tokens), axis=1)
        text = tf.strings.strip(tf.strings.regex_replace(text, "</w>", " "))
        return {"token_ids": tokens, "text": text}

    def _build_signatures(self) -> Dict[str, Any]:
        ids = _concrete(self.serve_ids, self.head.ids_inputs())
        if self.ids_only:
            return {DEFAULT_SIGNATURE: ids, IDS_SIGNATURE: ids}
        return {DEFAULT_SIGNATURE: _concrete(self.serve_text, self.head.text_inputs),
                IDS_SIGNATURE: ids,
                PREPROCESS_SIGNATURE: _concrete(self.preprocess, self.head.text_inputs),
                **self.head.extra_signatures(self)}


def serving_spec(task_model, task_spec, seq_length: int, max_query_length: int = 64,
                 max_answer_length: int = 30) -> ServingSpec:
    """The ServingSpec of a task model (task_spec: finetune.tasks.TaskSpec) or of a
    GptLanguageModel or LstmLanguageModel (GPT-1's LSTM baseline; task_spec None)."""
    from finetune.models import TaskModel, backbone_type
    from tfmodels.gpt import GptLanguageModel
    from tfmodels.lstm import LstmLanguageModel

    if isinstance(task_model, (GptLanguageModel, LstmLanguageModel)):
        kind, model_type, task = LM_KIND, "gpt", "language_model"
    elif isinstance(task_model, TaskModel):
        if task_spec is None:
            raise ValueError("a task model needs its task_spec (finetune.tasks.get_task)")
        kind, model_type, task = task_spec.kind, backbone_type(task_model), task_spec.name
    else:
        raise TypeError(f"expected a finetune TaskModel, a GptLanguageModel or an "
                        f"LstmLanguageModel, got {type(task_model).__name__}")
    config = task_model.config
    if not 1 <= seq_length <= config.max_positions:
        raise ValueError(f"seq_length must be in 1..{config.max_positions} (the model's "
                         f"positions), got {seq_length}")
    if model_type == "gpt" and kind in ("span", "token_classification"):
        raise ValueError(f"{kind} is a BERT task; GPT-1 has no input transform for it")
    views = None
    if kind == "multiple_choice":
        views = task_spec.num_choices
    symmetric = bool(getattr(task_model, "symmetric", False))
    if symmetric:
        views = 2
    if kind == "span" and seq_length - max_query_length - 3 < 1:
        raise ValueError(f"seq_length {seq_length} leaves no context window after a "
                         f"{max_query_length}-piece question, [CLS] and two [SEP]")
    if kind not in (LM_KIND, "span") and seq_length < 5:
        raise ValueError(f"seq_length {seq_length} is too short for the special tokens")
    return ServingSpec(
        kind=kind, model_type=model_type, seq_length=seq_length, task=task,
        label_names=tuple(task_spec.label_names) if task_spec is not None else (),
        is_pair=bool(task_spec.is_pair) if task_spec is not None else False, views=views,
        symmetric=symmetric, max_query_length=max_query_length,
        max_answer_length=max_answer_length, vocab_size=config.vocab_size)


def build_serving_module(task_model, task_spec, tokenizer, seq_length: int,
                         ids_only: bool = False, max_query_length: int = 64,
                         max_answer_length: int = 30,
                         pad_to_max_length: bool = False) -> ServingModule:
    """The module `export_saved_model` saves; its `serving_signatures` are callable in-process."""
    spec = serving_spec(task_model, task_spec, seq_length, max_query_length, max_answer_length)
    spec = dataclasses.replace(spec, pad_to_max_length=pad_to_max_length)
    if not ids_only:
        _check_tokenizer(tokenizer, spec, task_model.config.vocab_size)
    return ServingModule(task_model, HEADS[spec.kind](spec), tokenizer, ids_only=ids_only)


def _check_tokenizer(tokenizer, spec: ServingSpec, model_vocab: int) -> None:
    needed = "cls_id" if spec.model_type == "bert" else "start_id"
    if tokenizer is None or not hasattr(tokenizer, needed):
        kind = "WordPieceTokenizer" if spec.model_type == "bert" else "GptBpeTokenizer"
        raise ValueError(f"a {spec.model_type} model serves raw text through a {kind}, got "
                         f"{type(tokenizer).__name__}")
    if tokenizer.vocab_size > model_vocab:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} ids but the model's "
                         f"embedding only {model_vocab}")


# ---- assets, warmup and op audit --------------------------------------------------------------

def write_vocab_files(tokenizer, folder: str) -> Dict[str, str]:
    """The tokenizer's vocabulary as files a client (or GptBpeTokenizer / WordPieceTokenizer)
    reads: BERT vocab.txt; GPT-1 vocab.json + merges.txt (Hugging Face names, BPE ids only,
    the three added tokens follow them). Returns role -> path."""
    os.makedirs(folder, exist_ok=True)
    if hasattr(tokenizer, "cls_id"):
        path = os.path.join(folder, "vocab.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write("".join(t + "\n" for t in tokenizer.vocab))
        return {"vocab_file": path}
    encoder = {t: i for t, i in tokenizer.encoder.items() if i < tokenizer.bpe_vocab_size}
    merges_in_order = tokenizer.merges
    vocab, merges = os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt")
    with open(vocab, "w", encoding="utf-8") as f:
        json.dump(encoder, f, ensure_ascii=False)
    with open(merges, "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges_in_order))
    return {"encoder_file": vocab, "merges_file": merges}


def example_request(specs: Mapping[str, tf.TensorSpec], seq_length: int,
                    width: Optional[int] = None) -> Dict[str, np.ndarray]:
    """A small valid request (batch 1) for a signature's inputs: warmup and tests. Id inputs of
    open width get `width` positions (default seq_length), strings a short or a long text."""
    width = width or seq_length
    values = {}
    for name, spec in specs.items():
        shape = [1 if i == 0 else width if d is None else d for i, d in enumerate(spec.shape)]
        if spec.dtype == tf.string:
            text = "a warm up request" if width < seq_length else " ".join(["warm up"] * seq_length)
            values[name] = np.full(shape, text.encode(), dtype=object)
        elif name in ("max_new_tokens", "top_k"):
            values[name] = np.array(1, np.int32)
        elif name == "input_mask":
            values[name] = (np.arange(shape[-1]) < 2).astype(np.int32) * np.ones(shape, np.int32)
        elif name == "classify_position":
            values[name] = np.ones(shape, np.int32)
        else:
            values[name] = np.zeros(shape, spec.dtype.as_numpy_dtype)
    return values


def predict_request(model_name: str, signature_name: str, inputs: Mapping[str, Any]):
    """A tensorflow_serving PredictRequest for `inputs` (name -> array-like)."""
    from tensorflow_serving.apis import predict_pb2
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


def write_warmup(path: str, requests: Sequence) -> None:
    """TF Serving's warmup file: one PredictionLog record per request."""
    from tensorflow_serving.apis import prediction_log_pb2
    with tf.io.TFRecordWriter(path) as writer:
        for request in requests:
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def read_warmup(path: str) -> List:
    """The PredictionLog records of a warmup file (tests, inspection)."""
    from tensorflow_serving.apis import prediction_log_pb2
    logs = []
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record)
        logs.append(log)
    return logs


@functools.lru_cache(maxsize=None)
def core_ops() -> frozenset:
    """Op types registered by TensorFlow alone: listed by a fresh interpreter that imports
    only tensorflow (this one has tensorflow-text's ops loaded)."""
    script = ("from tensorflow.python.client import pywrap_tf_session as c\n"
              "from tensorflow.core.framework import op_def_pb2\n"
              "b = c.TF_GetAllOpList(); ops = op_def_pb2.OpList()\n"
              "ops.ParseFromString(c.TF_GetBuffer(b)); c.TF_DeleteBuffer(b)\n"
              "print('\\n'.join(o.name for o in ops.op))\n")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, check=True)
    return frozenset(result.stdout.split())


def graph_ops(saved_model_dir: str) -> List[str]:
    """Every op type in a SavedModel's graphs, function library included."""
    from tensorflow.core.protobuf import saved_model_pb2
    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    ops = set()
    for meta in saved.meta_graphs:
        ops.update(node.op for node in meta.graph_def.node)
        for fn in meta.graph_def.library.function:
            ops.update(node.op for node in fn.node_def)
    # Calls of library functions name the function as their op type.
    functions = {fn.signature.name for meta in saved.meta_graphs
                 for fn in meta.graph_def.library.function}
    return sorted(ops - functions)


def audit_ops(saved_model_dir: str) -> List[str]:
    """Sorted op types of the SavedModel that core TensorFlow does not register (the
    tensorflow-text kernels a server must link); [] means stock TF Serving can serve it."""
    return sorted(set(graph_ops(saved_model_dir)) - core_ops())


# ---- export -----------------------------------------------------------------------------------

def next_version(model_dir: str) -> int:
    """1 + the largest integer version folder in model_dir (1 if none)."""
    versions = [int(d) for d in os.listdir(model_dir) if d.isdigit()] if os.path.isdir(
        model_dir) else []
    return max(versions, default=0) + 1


def _signature_info(signatures: Mapping) -> Dict[str, Any]:
    info = {}
    for name, fn in signatures.items():
        inputs = fn.structured_input_signature[1]
        info[name] = {
            "inputs": {k: {"dtype": v.dtype.name, "shape": v.shape.as_list()}
                       for k, v in sorted(inputs.items())},
            "outputs": sorted(fn.structured_outputs)}
    return info


def export_saved_model(task_model, task_spec, tokenizer, export_base: str, model_name: str,
                       seq_length: int, ids_only: bool = False, max_query_length: int = 64,
                       max_answer_length: int = 30, warmup: bool = True,
                       pad_to_max_length: bool = False) -> str:
    """Exports `task_model` as version N+1 of `<export_base>/<model_name>/`; returns its path.

    task_model: a finetune TaskModel (task_spec = its finetune.tasks.TaskSpec) or a
      GptLanguageModel (task_spec None). tokenizer: the WordPieceTokenizer / GptBpeTokenizer
      it was fine-tuned with (optional with ids_only; then only the assets need it).
    ids_only: export only `serving_ids` (also as serving_default): core TensorFlow ops only.
    max_query_length / max_answer_length: SQuAD (as finetune.features.squad / best_span).
    warmup: write assets.extra/tf_serving_warmup_requests.
    pad_to_max_length: pack every raw-text request to seq_length (one static shape) instead of
      to its longest row.
    """
    if not model_name or os.sep in model_name or model_name.startswith("."):
        raise ValueError(f"model_name must be a plain folder name, got {model_name!r}")
    module = build_serving_module(task_model, task_spec, tokenizer, seq_length, ids_only,
                                  max_query_length, max_answer_length, pad_to_max_length)
    model_dir = os.path.join(export_base, model_name)
    os.makedirs(model_dir, exist_ok=True)
    temp = os.path.join(model_dir, f".tmp-{next_version(model_dir)}-{uuid.uuid4().hex[:8]}")
    try:
        with tempfile.TemporaryDirectory() as vocab_dir:
            files = write_vocab_files(tokenizer, vocab_dir) if tokenizer is not None else {}
            module.vocab_assets = [tf.saved_model.Asset(p) for p in files.values()]
            tf.saved_model.save(module, temp, signatures=module.serving_signatures)
        extra = os.path.join(temp, "assets.extra")
        os.makedirs(extra, exist_ok=True)
        if warmup:
            # A short and a full-length request per signature: rows are as wide as a
            # request's longest, so the server sees both ends of the range.
            write_warmup(os.path.join(extra, WARMUP_FILE), [
                predict_request(model_name, name, example_request(
                    fn.structured_input_signature[1], seq_length, width))
                for name, fn in module.serving_signatures.items()
                for width in sorted({min(8, seq_length), seq_length})])
        custom = audit_ops(temp)
        _write_json(os.path.join(extra, OPS_FILE), {
            "custom_ops": custom,
            "needs": ("TF Serving with the tensorflow-text ops linked in (see BUILD_NOTES.md, "
                      "Serving: custom ops)") if custom else "stock TF Serving (core ops only)"})
        spec = module.head.spec
        _write_json(os.path.join(extra, EXPORT_INFO), {
            "format": 1, "model_name": model_name, "ids_only": ids_only,
            **dataclasses.asdict(spec),
            "tokenizer": _tokenizer_info(tokenizer, files),
            "signatures": _signature_info(module.serving_signatures), "custom_ops": custom})
        return _publish(temp, model_dir)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def _publish(temp: str, model_dir: str) -> str:
    """Renames the finished export to the next free version (retrying if one appeared)."""
    for _ in range(100):
        final = os.path.join(model_dir, str(next_version(model_dir)))
        try:
            os.rename(temp, final)  # fails on an existing non-empty folder: never overwrites
            return final
        except OSError:
            if not os.path.isdir(final) or not os.listdir(final):
                raise
    raise RuntimeError(f"could not find a free version folder in {model_dir}")


def _tokenizer_info(tokenizer, files: Mapping[str, str]) -> Dict[str, Any]:
    if tokenizer is None:
        return {}
    info = {"files": {k: os.path.basename(v) for k, v in files.items()},
            "vocab_size": tokenizer.vocab_size}
    if hasattr(tokenizer, "cls_id"):
        info.update(type="wordpiece", lower_case=bool(tokenizer.lower_case))
    else:
        info.update(type="gpt_bpe", special_tokens=list(tokenizer.special_tokens))
    return info


def _write_json(path: str, value: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, ensure_ascii=False)
        f.write("\n")


# ---- loading what was exported / fine-tuned ---------------------------------------------------

def latest_version(path: str) -> str:
    """A version folder as given, or the highest version inside a model folder."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    if not os.path.isdir(path):
        raise ValueError(f"{path} does not exist")
    version = next_version(path) - 1
    if version < 1:
        raise ValueError(f"{path} holds neither saved_model.pb nor integer version folders")
    return os.path.join(path, str(version))


def read_export_info(version_dir: str) -> Dict[str, Any]:
    """assets.extra/export.json of an export made here."""
    path = os.path.join(version_dir, "assets.extra", EXPORT_INFO)
    if not os.path.isfile(path):
        raise ValueError(f"{path} is missing: not exported by finetune.export")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_keras_model(path: str):
    """A `.keras` file from fine-tuning (TaskModel) or pretraining (GptLanguageModel)."""
    import keras
    import finetune.models  # noqa: F401  (registers the task model classes)
    import tfmodels.bert  # noqa: F401
    import tfmodels.gpt  # noqa: F401
    if not os.path.isfile(path):
        raise ValueError(f"model file {path} does not exist")
    return keras.saving.load_model(path, compile=False)


@dataclasses.dataclass
class Source:
    """A `.keras` model and what serving it needs; empty fields are filled from the fine-tuning
    run's results.json beside the model (its `config`), then from the model itself."""

    model_path: str
    task: str = ""                      # "" and a GptLanguageModel: the LM
    seq_length: int = 0                 # 0: the run's, else 128 (capped by the model)
    vocab_file: str = ""
    bpe_encoder_file: str = ""
    bpe_merges_file: str = ""
    lower_case: Optional[bool] = None   # None: the run's, else True
    max_query_length: int = 0           # 0: the run's, else 64
    max_answer_length: int = 0          # 0: the run's, else 30


@dataclasses.dataclass
class Loaded:
    model: Any
    task_spec: Any                      # None for the LM
    tokenizer: Any
    seq_length: int
    max_query_length: int
    max_answer_length: int


def run_config(model_path: str) -> Dict[str, Any]:
    """`config` of results.json beside the model (finetune.trainer writes it), or {}."""
    path = os.path.join(os.path.dirname(os.path.abspath(model_path)), "results.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f).get("config", {}) or {}
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}, line {e.lineno}: not valid JSON ({e.msg})") from None


def load_source(source: Source) -> Loaded:
    """Model, task, tokenizer and lengths of a Source (see its fields for the defaults)."""
    from finetune.models import TaskModel
    from finetune.tasks import TASKS, get_task
    run = run_config(source.model_path)
    model = load_keras_model(source.model_path)
    task = source.task or run.get("task", "") or (
        model.name if isinstance(model, TaskModel) and model.name in TASKS else "")
    if isinstance(model, TaskModel) and not task:
        raise ValueError(f"{source.model_path}: cannot tell the task (no results.json beside "
                         "it and the model's name is not a task); pass task")
    task_spec = get_task(task) if isinstance(model, TaskModel) else None
    model_type = model_type_of(model)
    lower_case = source.lower_case if source.lower_case is not None else run.get("lower_case", True)
    tokenizer = load_tokenizer(model_type, source.vocab_file or run.get("vocab_file", ""),
                               source.bpe_encoder_file or run.get("bpe_encoder_file", ""),
                               source.bpe_merges_file or run.get("bpe_merges_file", ""),
                               bool(lower_case))
    seq_length = source.seq_length or run.get("seq_length", 0) or min(
        128, model.config.max_positions)
    return Loaded(model, task_spec, tokenizer, int(seq_length),
                  int(source.max_query_length or run.get("max_query_length", 64)),
                  int(source.max_answer_length or run.get("max_answer_length", 30)))


def export_from_source(source: Source, export_base: str, model_name: str = "",
                       ids_only: bool = False) -> str:
    """`export_saved_model` of a `.keras` file (tools/export_model); model_name defaults to
    the task (or "gpt_lm")."""
    loaded = load_source(source)
    name = model_name or (loaded.task_spec.name if loaded.task_spec is not None else "gpt_lm")
    return export_saved_model(loaded.model, loaded.task_spec, loaded.tokenizer, export_base,
                              name, loaded.seq_length, ids_only=ids_only,
                              max_query_length=loaded.max_query_length,
                              max_answer_length=loaded.max_answer_length)


def serving_module_from_source(source: Source) -> ServingModule:
    """The in-process serving module of a `.keras` file (tools/predict without an export)."""
    loaded = load_source(source)
    return build_serving_module(loaded.model, loaded.task_spec, loaded.tokenizer,
                                loaded.seq_length, max_query_length=loaded.max_query_length,
                                max_answer_length=loaded.max_answer_length)


def model_type_of(model) -> str:
    """"bert" or "gpt" for a TaskModel; "gpt" for the LM."""
    from finetune.models import TaskModel, backbone_type
    return backbone_type(model) if isinstance(model, TaskModel) else "gpt"
