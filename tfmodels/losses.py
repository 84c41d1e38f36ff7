"""The pretraining objectives of both papers, as functions of model outputs and a batch.

Each returns a dict of scalars: `loss` (what is minimised) plus the named parts and metrics,
so training loops, tests and TensorBoard summaries read the same numbers.
"""
from typing import Dict

import tensorflow as tf


def _weighted_mean(values, weights):
    weights = tf.cast(weights, tf.float32)
    return tf.reduce_sum(values * weights) / tf.maximum(tf.reduce_sum(weights), 1e-5)


def masked_lm_loss(mlm_logits, masked_lm_ids, masked_lm_weights,
                   masked_inputs=None) -> Dict[str, tf.Tensor]:
    """Mean cross-entropy over the masked positions only (weight 0 marks padding predictions).

    mlm_logits float [batch, predictions, vocab]; masked_lm_ids / masked_lm_weights
    [batch, predictions]. masked_inputs: the input ids at those positions; when given, also
    `mlm_replaced_accuracy`, the accuracy on the positions whose input token was replaced
    ([MASK] or a random token). `mlm_accuracy` also counts the 10% kept positions, where the
    answer is the input itself: a model that only copies them and guesses "the" elsewhere
    scores ~0.14 there, and only the replaced positions show what it learned from context.
    """
    per_position = tf.keras.losses.sparse_categorical_crossentropy(
        masked_lm_ids, tf.cast(mlm_logits, tf.float32), from_logits=True)
    targets = tf.cast(masked_lm_ids, tf.int32)
    correct = tf.cast(tf.equal(tf.argmax(mlm_logits, -1, output_type=tf.int32), targets),
                      tf.float32)
    metrics = {"mlm_loss": _weighted_mean(per_position, masked_lm_weights),
               "mlm_accuracy": _weighted_mean(correct, masked_lm_weights)}
    if masked_inputs is not None:
        replaced = tf.cast(tf.not_equal(tf.cast(masked_inputs, tf.int32), targets), tf.float32)
        metrics["mlm_replaced_accuracy"] = _weighted_mean(
            correct, replaced * tf.cast(masked_lm_weights, tf.float32))
    return metrics


def next_sentence_loss(nsp_logits, next_sentence_labels) -> Dict[str, tf.Tensor]:
    """Mean cross-entropy of IsNext (0) vs NotNext (1); labels [batch] or [batch, 1]."""
    labels = tf.reshape(tf.cast(next_sentence_labels, tf.int32), [-1])
    per_example = tf.keras.losses.sparse_categorical_crossentropy(
        labels, tf.cast(nsp_logits, tf.float32), from_logits=True)
    correct = tf.equal(tf.argmax(nsp_logits, -1, output_type=tf.int32), labels)
    return {"nsp_loss": tf.reduce_mean(per_example),
            "nsp_accuracy": tf.reduce_mean(tf.cast(correct, tf.float32))}


def bert_pretraining_loss(outputs, batch, use_nsp: bool = True) -> Dict[str, tf.Tensor]:
    """BERT's loss: mean MLM loss + mean NSP loss (the paper sums the two means)."""
    masked_inputs = tf.gather(batch["input_ids"], batch["masked_lm_positions"], batch_dims=1)
    metrics = masked_lm_loss(outputs["mlm_logits"], batch["masked_lm_ids"],
                             batch["masked_lm_weights"], masked_inputs)
    loss = metrics["mlm_loss"]
    if use_nsp:
        metrics.update(next_sentence_loss(outputs["nsp_logits"], batch["next_sentence_labels"]))
        loss = loss + metrics["nsp_loss"]
    return {"loss": loss, **metrics}


def causal_lm_loss(logits, input_ids, input_mask=None) -> Dict[str, tf.Tensor]:
    """GPT's objective: position t predicts token t + 1; mean over real target tokens.

    logits float [batch, seq, vocab]; input_ids [batch, seq]; input_mask [batch, seq] optional.
    """
    targets = input_ids[:, 1:]
    per_token = tf.keras.losses.sparse_categorical_crossentropy(
        targets, tf.cast(logits[:, :-1], tf.float32), from_logits=True)
    weights = tf.ones_like(per_token) if input_mask is None else input_mask[:, 1:]
    loss = _weighted_mean(per_token, weights)
    correct = tf.cast(tf.equal(tf.argmax(logits[:, :-1], -1, output_type=tf.int32),
                               tf.cast(targets, tf.int32)), tf.float32)
    return {"loss": loss, "lm_loss": loss, "perplexity": tf.exp(loss),
            "lm_accuracy": _weighted_mean(correct, weights)}


def gpt_pretraining_loss(outputs, batch) -> Dict[str, tf.Tensor]:
    return causal_lm_loss(outputs["logits"], batch["input_ids"], batch.get("input_mask"))
