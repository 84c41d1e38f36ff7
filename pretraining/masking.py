"""BERT's masked-LM corruption, in-graph, on tensorflow-text's masking ops.

Of the selectable positions (not [CLS] / [SEP] / [PAD]), `selection_rate` (15%) are chosen,
at most `max_predictions` per sequence; of those 80% become [MASK], 10% a random token and
10% stay unchanged. With whole-word masking a word's pieces are chosen together.
Runs inside tf.data for dynamic masking (a fresh mask every epoch).
"""
from typing import Dict, Sequence

import tensorflow as tf
import tensorflow_text as tf_text

from tfmodels.tokenizers.wordpiece import group_pieces_into_words


def mask_packed_inputs(inputs: Dict[str, tf.Tensor], vocab_size: int, mask_id: int,
                       unselectable_ids: Sequence[int], max_predictions: int,
                       selection_rate: float = 0.15, mask_token_rate: float = 0.8,
                       random_token_rate: float = 0.1,
                       continuation_mask: tf.Tensor = None) -> Dict[str, tf.Tensor]:
    """Adds masked-LM features to packed BERT inputs.

    inputs: `input_ids`, `input_mask` (and anything else, passed through), int [batch, seq].
    continuation_mask: bool [vocab] marking '##' pieces; given, whole words are masked.
    Returns inputs with `input_ids` corrupted and `masked_lm_positions`, `masked_lm_ids`
    int32 [batch, max_predictions] and `masked_lm_weights` float32 [batch, max_predictions]
    (0 marks padding predictions), the google-research/bert feature names.
    """
    ids = tf.RaggedTensor.from_tensor(tf.cast(inputs["input_ids"], tf.int32),
                                      lengths=tf.reduce_sum(tf.cast(inputs["input_mask"],
                                                                    tf.int32), axis=1))
    seq_length = inputs["input_ids"].shape[1]
    if seq_length is None:
        raise ValueError("input_ids need a static sequence length (pad to a fixed length)")
    if continuation_mask is not None:
        ids = group_pieces_into_words(ids, continuation_mask)
    ids = ids.with_row_splits_dtype(tf.int64)  # tf-text's selector expects int64 splits
    selector = tf_text.RandomItemSelector(
        max_selections_per_batch=max_predictions, selection_rate=selection_rate,
        unselectable_ids=list(unselectable_ids))
    chooser = tf_text.MaskValuesChooser(vocab_size, mask_id, mask_token_rate=mask_token_rate,
                                        random_token_rate=random_token_rate)
    masked, positions, original = tf_text.mask_language_model(ids, selector, chooser)
    if masked.ragged_rank > 1:
        masked = masked.merge_dims(1, 2)
    if positions.ragged_rank > 1:
        positions, original = positions.merge_dims(1, 2), original.merge_dims(1, 2)
    if continuation_mask is not None:
        positions, original = _drop_overflowing_words(positions, original, continuation_mask,
                                                      max_predictions)
    input_ids = masked.to_tensor(default_value=0, shape=[None, seq_length])
    if continuation_mask is not None:
        # Pieces of the dropped words go back to their original ids: only predicted
        # positions may differ from the text.
        predicted = tf.reduce_any(tf.equal(
            tf.range(seq_length, dtype=positions.dtype)[None, None, :],
            positions.to_tensor(default_value=-1)[:, :, None]), axis=1)
        input_ids = tf.where(predicted, input_ids, tf.cast(inputs["input_ids"], input_ids.dtype))
    positions_dense = positions.to_tensor(default_value=0, shape=[None, max_predictions])
    weights = tf.ones_like(positions, tf.float32).to_tensor(shape=[None, max_predictions])
    return {**inputs, "input_ids": input_ids,
            "masked_lm_positions": tf.cast(positions_dense, tf.int32),
            "masked_lm_ids": tf.cast(original.to_tensor(shape=[None, max_predictions]), tf.int32),
            "masked_lm_weights": weights}


def _drop_overflowing_words(positions: tf.RaggedTensor, original: tf.RaggedTensor,
                            continuation_mask: tf.Tensor, max_predictions: int):
    """Keeps the selected words (in position order) whose pieces fit in `max_predictions`.

    The selector counts words, so their pieces can exceed the budget; google-research/bert
    skips a word that would overflow rather than cut it, and so do we.
    positions / original: ragged [batch, (selected pieces)], whole words, in position order.
    """
    dense_positions = positions.to_tensor(default_value=-1)
    dense_original = original.to_tensor(default_value=0)
    valid = dense_positions >= 0
    starts = valid & ~tf.gather(continuation_mask, tf.cast(dense_original, tf.int32))
    word = tf.where(valid, tf.cumsum(tf.cast(starts, tf.int32), axis=1), tf.int32.max)
    # Pieces selected up to the end of each piece's word (word ids are non-decreasing).
    through_word_end = tf.searchsorted(word, word, side="right")
    keep = valid & (through_word_end <= max_predictions)
    return (tf.ragged.boolean_mask(dense_positions, keep),
            tf.ragged.boolean_mask(dense_original, keep))
