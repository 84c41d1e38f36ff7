"""Token classification (CoNLL-2003 NER) for BERT: one tag per word, read at its first piece.

Each word is WordPiece-tokenized on its own; the sentence is `[CLS] pieces [SEP]`. The tag id
goes on the word's FIRST piece; later pieces and the special tokens get label id -1, which
`label_mask` (1 = a word's first piece) tells the loss and metrics to ignore — the BERT
paper's NER setup. A word that tokenizes to nothing (control characters only) gets one [UNK]
piece so every word keeps a position.

Sentences longer than `seq_length - 2` pieces are truncated: words whose first piece does not
fit are dropped (not split into another feature) and `decode_word_predictions` predicts
"O" for them, so the output always has one tag per original word.
"""
from __future__ import annotations

import dataclasses
from typing import List, Sequence, Tuple

import numpy as np

from finetune.examples import TokenExample
import tensorflow as tf

from finetune.features.common import (EncodedFeatures, Tokens, check_seq_length, check_text,
                                      example_error, in_chunks, label_index, labels_present,
                                      lookup_label, to_numpy)
from finetune.text_inputs import pack_words

IGNORE_LABEL = -1


@dataclasses.dataclass(frozen=True, eq=False)
class TokenFeature:
    """Word <-> position map of one sentence (one row of the arrays)."""

    example_index: int
    guid: str
    num_words: int
    word_positions: np.ndarray       # int32 [kept words]: position of each word's first piece
    label_names: Tuple[str, ...]

    @property
    def num_dropped_words(self) -> int:
        return self.num_words - len(self.word_positions)


def encode_token_examples(examples: Sequence[TokenExample], tokenizer, seq_length: int,
                          label_names: Sequence[str]) -> EncodedFeatures:
    """Sentences -> BERT inputs, `label_mask` and (when tagged) `label_ids` [n, seq]."""
    if not examples:
        raise ValueError("no examples to encode")
    index = label_index(label_names, "tag")
    check_seq_length(seq_length, 1, 1, "a sentence")
    for i, ex in enumerate(examples):
        if not isinstance(ex, TokenExample):
            raise ValueError(f"example {i} is a {type(ex).__name__}, expected TokenExample")
        if not ex.words:
            raise example_error("sentence", ex.guid, "has no words")
        for k, word in enumerate(ex.words):
            check_text(word, "sentence", ex.guid, f"word {k}")
        if ex.tags is not None and len(ex.tags) != len(ex.words):
            raise example_error("sentence", ex.guid,
                                f"has {len(ex.words)} words but {len(ex.tags)} tags")
    tagged = labels_present([ex.tags for ex in examples], "sentence", [ex.guid for ex in examples])

    tokens = Tokens(tokenizer, "bert", seq_length)
    positions = []

    def build(i, j):
        words = tf.ragged.constant([list(ex.words) for ex in examples[i:j]], tf.string)
        inputs, position = pack_words(tokens.packer, words, tokenizer.unk_id, width=seq_length)
        positions.extend(position.to_list())
        return to_numpy(inputs)

    arrays = in_chunks(len(examples), build)
    label_ids = np.full((len(examples), seq_length), IGNORE_LABEL, np.int32)
    label_mask = np.zeros((len(examples), seq_length), np.int32)
    metadata = []
    for n, (ex, word_positions) in enumerate(zip(examples, positions)):
        # Words whose first piece is past [CLS] + seq_length - 2 pieces were cut: "O".
        kept = np.array([p for p in word_positions if p < seq_length - 1], np.int32)
        metadata.append(TokenFeature(n, ex.guid, len(ex.words), kept, tuple(label_names)))
        label_mask[n, kept] = 1
        if tagged:
            label_ids[n, kept] = [lookup_label(index, t, "sentence", ex.guid)
                                  for t in ex.tags[:len(kept)]]
            for tag in ex.tags[len(kept):]:  # dropped words must still carry valid tags
                lookup_label(index, tag, "sentence", ex.guid)
    arrays["label_mask"] = label_mask
    arrays["example_index"] = np.arange(len(examples), dtype=np.int32)
    label_keys: Tuple[str, ...] = ()
    if tagged:
        arrays["label_ids"] = label_ids
        label_keys = ("label_ids", "label_mask")
    return EncodedFeatures(arrays, tokens.input_keys(), label_keys, metadata)


def decode_word_predictions(pred_ids_per_token: np.ndarray, feature: TokenFeature,
                            outside_label: str = "O") -> List[str]:
    """Per-position tag ids [seq] (or logits [seq, tags]) -> one tag per original word.

    Each word takes the prediction at its first piece; words dropped by truncation get
    `outside_label`.
    """
    pred = np.asarray(pred_ids_per_token)
    if pred.ndim == 2:
        pred = pred.argmax(-1)
    if pred.ndim != 1:
        raise ValueError(f"expected tag ids [seq] or logits [seq, tags], got shape {pred.shape}")
    names = feature.label_names
    tags = []
    for position in feature.word_positions:
        tag_id = int(pred[position])
        if not 0 <= tag_id < len(names):
            raise ValueError(f"sentence {feature.guid!r}: predicted tag id {tag_id} at position "
                             f"{position} is not in 0..{len(names) - 1}")
        tags.append(names[tag_id])
    return tags + [outside_label] * feature.num_dropped_words
