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
        # Whole words can exceed the budget by a few pieces; keep the first max_predictions.
        positions, original = positions[:, :max_predictions], original[:, :max_predictions]
    input_ids = masked.to_tensor(default_value=0, shape=[None, seq_length])
    positions_dense = positions.to_tensor(default_value=0, shape=[None, max_predictions])
    weights = tf.ones_like(positions, tf.float32).to_tensor(shape=[None, max_predictions])
    return {**inputs, "input_ids": input_ids,
            "masked_lm_positions": tf.cast(positions_dense, tf.int32),
            "masked_lm_ids": tf.cast(original.to_tensor(shape=[None, max_predictions]), tf.int32),
            "masked_lm_weights": weights}
