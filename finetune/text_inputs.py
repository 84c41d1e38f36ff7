"""Each task kind's rows, built in graph by `tfmodels.preprocessing.TextPacker`: the functions
that fine-tuning features (finetune.features, eagerly over all examples) and exported
SavedModels (finetune.export, per request) both call, so the two cannot build different rows.

  pack_texts    one text or a pair: BERT `[CLS] A [SEP] (B [SEP])`, GPT-1 `[s] A ([$] B) [e]`;
                GPT-1 similarity (symmetric): both orders as a view axis [n, 2, w]
  pack_choices  one row per candidate ending [n, c, w]: BERT's SWAG `[CLS] context [SEP]
                question ending [SEP]`; GPT-1 `[s] context question [$] ending [e]`
  pack_words    NER: whitespace words, each tokenised on its own, the position of each word's
                first piece (a word whose first piece does not fit gets a position past the row)

All take token ids as ragged tensors (`packer.tokenize`), so callers can check for texts that
tokenise to nothing before packing; `width` pads to a fixed width (None: the batch's longest).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import tensorflow as tf

from tfmodels.preprocessing import TextPacker, first_n, keep_lengths


def split_views(inputs: Dict[str, tf.Tensor], views: int) -> Dict[str, tf.Tensor]:
    """[n * views, ...] -> [n, views, ...]."""
    return {k: tf.reshape(v, tf.concat([[-1, views], tf.shape(v)[1:]], 0))
            for k, v in inputs.items()}


def pack_texts(packer: TextPacker, a: tf.RaggedTensor, b: Optional[tf.RaggedTensor] = None,
               symmetric: bool = False, width: Optional[int] = None) -> Dict[str, tf.Tensor]:
    """Model inputs of single texts (b None) or pairs; symmetric (GPT-1 similarity): [n, 2, w],
    view 1 the exact swap of view 0 (truncated once, then laid out both ways)."""
    if b is None:
        return packer.model_inputs(packer.pack([a], width=width))
    if not symmetric:
        return packer.model_inputs(packer.pack([a, b], width=width))
    keep = keep_lengths(tf.stack([tf.cast(a.row_lengths(), tf.int32),
                                  tf.cast(b.row_lengths(), tf.int32)], 1), packer.seq_length - 3)
    a, b = first_n(a, keep[:, 0]), first_n(b, keep[:, 1])
    views = [packer.model_inputs(packer.pack(p, truncate=False, width=width))
             for p in ([a, b], [b, a])]
    return {k: tf.stack([views[0][k], views[1][k]], axis=1) for k in views[0]}


def pack_choices(packer: TextPacker, context: tf.RaggedTensor, question: tf.RaggedTensor,
                 endings: tf.RaggedTensor, num_choices: int,
                 width: Optional[int] = None) -> Dict[str, tf.Tensor]:
    """context, question [n, (t)] and endings [n * num_choices, (t)] -> inputs [n, c, w]."""
    rows = tf.repeat(tf.range(context.nrows(out_type=tf.int32)), num_choices)
    context, question = tf.gather(context, rows), tf.gather(question, rows)
    if packer.input_format == "bert":
        # BERT's SWAG: B = start phrase + ending, truncated against the context as one part.
        packed = packer.pack([context, tf.concat([question, endings], axis=1)], width=width)
    else:
        packed = packer.pack([context, question, endings], groups=[[0, 1], [2]], width=width)
    return split_views(packer.model_inputs(packed), num_choices)


def pack_words(packer: TextPacker, words: tf.RaggedTensor, unk_id: int,
               width: Optional[int] = None) -> Tuple[Dict[str, tf.Tensor], tf.RaggedTensor]:
    """string words [n, (w)] -> (BERT inputs [n, w'], first-piece position [n, (w)]).

    A word that tokenises to nothing (control characters only) gets one [UNK] so every word
    keeps a position. Rows are cut to seq_length - 2 pieces; a word whose first piece falls
    beyond that gets a position >= seq_length - 1 (dropped: decoded as "O").
    """
    pieces = packer.tokenize(words.flat_values)
    lengths = tf.cast(pieces.row_lengths(), tf.int32)
    unk = tf.RaggedTensor.from_tensor(tf.fill(tf.stack([pieces.nrows(out_type=tf.int32), 1]),
                                              tf.constant(unk_id, tf.int32)))
    pieces = tf.ragged.boolean_mask(
        tf.concat([pieces, unk], axis=1),
        tf.concat([tf.ones_like(pieces, tf.bool),
                   tf.RaggedTensor.from_tensor((lengths == 0)[:, None])], axis=1))
    lengths = tf.maximum(lengths, 1)
    # Position of each word's first piece inside its sentence (+1 for [CLS]).
    start = tf.cumsum(lengths, exclusive=True)
    splits = tf.cast(words.row_splits, tf.int32)
    sentence_start = tf.gather(tf.concat([start, [tf.reduce_sum(lengths)]], 0), splits[:-1])
    position = start - tf.gather(sentence_start, words.value_rowids()) + 1
    sentence_pieces = tf.RaggedTensor.from_row_splits(
        pieces.flat_values, tf.gather(pieces.row_splits, words.row_splits))
    inputs = packer.model_inputs(packer.pack([sentence_pieces], width=width))
    return inputs, words.with_flat_values(position)
