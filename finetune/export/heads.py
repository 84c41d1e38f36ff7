"""Serving heads: how each task kind turns sanitised raw text into model inputs (through
finetune.text_inputs / tfmodels.preprocessing, the rows fine-tuning trains on) and model
outputs into named, decoded predictions (labels, answers, tags, next-token log-probs).

Differences from the fine-tuning features, by design:
- SQuAD is served on ONE window: the question (max_query_length pieces) and the first
  seq_length - len(question) - 3 context pieces; a longer context is cut, not strided (for
  long contexts, send windows yourself or use finetune.features + serving_ids).
  Character offsets are exact for words whose normalised form keeps its UTF-8 length (all
  ASCII); other words map each piece to the whole word's span (the original run_squad
  granularity), so an answer inside such a word comes back as the whole word.
- The GPT-1 LM keeps the LAST seq_length tokens of a long text (the context nearest the
  next token); task models truncate longest-first from the end, as the encoders do.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from finetune.export.signatures import GENERATE_SIGNATURE, TEXT, concrete
from finetune.text_inputs import pack_choices, pack_texts, pack_words
from tfmodels.preprocessing import TextPacker, first_n, whitespace_words

OUTSIDE_TAG = "O"       # NER tag of words truncated away (finetune.features.tokens)


@dataclasses.dataclass(frozen=True)
class ServingSpec:
    """Static facts the signature builders need."""

    kind: str                           # the task kind's name (finetune.kinds)
    input_format: str                   # "bert" | "gpt"
    seq_length: int
    task: str = ""
    label_names: Tuple[str, ...] = ()
    is_pair: bool = False
    views: Optional[int] = None         # candidates (multiple choice) or 2 (GPT-1 similarity)
    symmetric: bool = False
    max_query_length: int = 64
    max_answer_length: int = 30
    vocab_size: int = 0                 # the model's output vocabulary (LM)
    max_new_tokens_limit: int = 0       # LM: the most tokens one `generate` request may ask for
    pad_to_max_length: bool = False     # every request seq_length wide (else its longest row)


class Head:
    """How one task kind is served (a kind's `serving_head`, finetune.kinds). Subclasses set
    `text_inputs` and override `encode` / `decode` (and `decode_text` where text gives more
    than ids, e.g. SQuAD char offsets)."""

    text_inputs: Dict[str, tf.TensorSpec] = {}

    def __init__(self, spec: ServingSpec):
        self.spec = spec

    def ids_inputs(self) -> Dict[str, tf.TensorSpec]:
        s = self.spec
        lead = [None] if s.views is None else [None, s.views]
        # Any width up to seq_length: a client may pad a batch only to its longest row.
        seq = tf.TensorSpec(lead + [None], tf.int32)
        if s.input_format == "bert":
            return {"input_ids": seq, "segment_ids": seq, "input_mask": seq}
        return {"input_ids": seq, "input_mask": seq,
                "classify_position": tf.TensorSpec(lead, tf.int32)}

    def encode(self, packer: TextPacker, texts: Mapping[str, tf.Tensor]):
        """Sanitised text inputs -> (model inputs, state for decode_text)."""
        raise NotImplementedError

    def decode(self, outputs: Mapping, inputs: Mapping) -> Dict[str, tf.Tensor]:
        raise NotImplementedError

    def decode_text(self, outputs: Mapping, inputs: Mapping, state) -> Dict[str, tf.Tensor]:
        return self.decode(outputs, inputs)

    def extra_signatures(self, module) -> Dict[str, Any]:
        """Further signatures (name -> concrete function) beyond serving_default / serving_ids."""
        return {}

    def signature_defaults(self) -> Dict[str, Dict[str, Any]]:
        """signature -> {input: value a request may leave out}, recorded in the exported
        SignatureDef's `defaults` (finetune.export.signatures.with_defaults)."""
        return {}


def _class_outputs(logits: tf.Tensor, label_names: Sequence[str]) -> Dict[str, tf.Tensor]:
    class_ids = tf.argmax(logits, axis=-1, output_type=tf.int32)
    return {"class_ids": class_ids, "labels": tf.gather(tf.constant(list(label_names)), class_ids),
            "probabilities": tf.nn.softmax(logits, axis=-1)}


class SequenceHead(Head):
    """Classification of one text or a pair (GPT-1 similarity: both orders)."""

    @property
    def text_inputs(self):
        return {"text_a": TEXT, "text_b": TEXT} if self.spec.is_pair else {"text": TEXT}

    def encode(self, packer, texts):
        if not self.spec.is_pair:
            return pack_texts(packer, packer.tokenize(texts["text"])), None
        return pack_texts(packer, packer.tokenize(texts["text_a"]),
                          packer.tokenize(texts["text_b"]), self.spec.symmetric), None

    def decode(self, outputs, inputs):
        return _class_outputs(outputs["logits"], self.spec.label_names)


class RegressionHead(SequenceHead):
    """A score for one text or a pair (STS-B)."""

    def decode(self, outputs, inputs):
        return {"score": outputs["predictions"]}


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


def real_lengths(inputs) -> tf.Tensor:
    """Number of real tokens per row, checked positive (the LM predicts from the last one)."""
    lengths = tf.reduce_sum(tf.cast(inputs["input_mask"] > 0, tf.int32), axis=1)
    check = tf.debugging.assert_positive(lengths, message="text has no tokens: the language "
                                         "model needs at least one token to predict from")
    with tf.control_dependencies([check]):
        return tf.identity(lengths)


# The `generate` signature's inputs: the first four since it exists (every request names them),
# then the decoding options added later, each with the default a request may leave out (the
# SignatureDef records it, so older clients keep working unchanged).
GENERATE_INPUTS = {"text": TEXT, "max_new_tokens": tf.TensorSpec([], tf.int32),
                   "top_k": tf.TensorSpec([], tf.int32), "seed": tf.TensorSpec([], tf.int32)}
GENERATE_OPTIONS = {
    "temperature": (tf.TensorSpec([], tf.float32), 1.0),
    "top_p": (tf.TensorSpec([], tf.float32), 1.0),
    "num_beams": (tf.TensorSpec([], tf.int32), 1),
    "do_sample": (tf.TensorSpec([], tf.bool), False),
    "stop": (tf.TensorSpec([None], tf.string), []),
}
# Beam search multiplies a request's rows by num_beams: this ceiling bounds its memory.
MAX_NUM_BEAMS = 16


class LanguageModelHead(Head):
    """GPT-1 LM: the next-token distribution after the text, and generation (greedy, sampling
    with temperature / top-k / top-p, beam search; ServingModule.generate)."""

    text_inputs = {"text": TEXT}

    def ids_inputs(self) -> Dict[str, tf.TensorSpec]:
        # Exactly seq_length wide: generation appends into the window.
        seq = tf.TensorSpec([None, self.spec.seq_length], tf.int32)
        return {"input_ids": seq, "input_mask": seq}

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
        lengths = real_lengths(inputs)
        logits = tf.gather(outputs["logits"], (lengths - 1)[:, None], batch_dims=1)[:, 0]
        return {"next_token_log_probs": tf.nn.log_softmax(logits, axis=-1),
                "num_tokens": lengths}

    def extra_signatures(self, module):
        specs = {**GENERATE_INPUTS, **{k: spec for k, (spec, _) in GENERATE_OPTIONS.items()}}
        return {GENERATE_SIGNATURE: concrete(module.generate, specs)}

    def signature_defaults(self):
        return {GENERATE_SIGNATURE: {k: default for k, (_, default) in GENERATE_OPTIONS.items()}}
