"""What a pretrained BERT's MLM head learned, split by what its input held at each prediction.

A static-masking record replaces each chosen position by [MASK], keeps it, or puts a random
token there (80/10/10 by default). At a kept position the answer is the input itself, so a
model that learned only to copy scores ~0.10 of the positions for free, and one that also
guesses the commonest token everywhere else reaches the ~0.14 overall accuracy a plateaued
bert_tiny shows. The accuracy at [MASK] and at random positions, against that unigram guess,
is what says whether it learned to predict from context.
"""
import collections
from typing import Dict, Iterable

import numpy as np

INPUT_SOURCES = ("mask", "random", "kept")  # what a predicted position was fed


def mlm_accuracy_by_input(model, batches: Iterable[Dict], mask_id: int) -> Dict[str, float]:
    """Held-out MLM accuracy per input source over `batches` (bert_pretraining_dataset batches):
    `<source>_accuracy` and `<source>_share` for source in mask / random / kept (a source a
    record mix never uses is left out), `positions`, and `unigram_accuracy`: how often always answering
    the commonest target of these positions would be right."""
    hits, counts, targets = collections.Counter(), collections.Counter(), collections.Counter()
    for batch in batches:
        logits = model(batch, training=False)["mlm_logits"]
        predicted = np.argmax(np.asarray(logits), -1)
        labels = np.asarray(batch["masked_lm_ids"])
        weights = np.asarray(batch["masked_lm_weights"]) > 0
        inputs = np.take_along_axis(np.asarray(batch["input_ids"]),
                                    np.asarray(batch["masked_lm_positions"]), axis=1)
        sources = np.where(inputs == mask_id, 0, np.where(inputs == labels, 2, 1))
        right = predicted == labels
        for index, source in enumerate(INPUT_SOURCES):
            chosen = weights & (sources == index)
            counts[source] += int(chosen.sum())
            hits[source] += int((right & chosen).sum())
        targets.update(labels[weights].tolist())
    total = sum(counts.values())
    if not total:
        raise ValueError("no weighted MLM predictions in the batches given")
    result = {"positions": float(total),
              "unigram_accuracy": targets.most_common(1)[0][1] / total}
    for source in INPUT_SOURCES:
        if counts[source]:
            result[f"{source}_accuracy"] = hits[source] / counts[source]
            result[f"{source}_share"] = counts[source] / total
    return result
