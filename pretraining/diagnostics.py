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

KINDS = ("mask", "random", "kept")


def mlm_accuracy_by_input(model, batches: Iterable[Dict], mask_id: int) -> Dict[str, float]:
    """Held-out MLM accuracy per input kind over `batches` (bert_pretraining_dataset batches):
    `<kind>_accuracy` and `<kind>_share` for kind in mask / random / kept (a kind a record mix
    never uses is left out), `positions`, and `unigram_accuracy`: how often always answering
    the commonest target of these positions would be right."""
    hits, counts, targets = collections.Counter(), collections.Counter(), collections.Counter()
    for batch in batches:
        logits = model(batch, training=False)["mlm_logits"]
        predicted = np.argmax(np.asarray(logits), -1)
        labels = np.asarray(batch["masked_lm_ids"])
        weights = np.asarray(batch["masked_lm_weights"]) > 0
        inputs = np.take_along_axis(np.asarray(batch["input_ids"]),
                                    np.asarray(batch["masked_lm_positions"]), axis=1)
        kinds = np.where(inputs == mask_id, 0, np.where(inputs == labels, 2, 1))
        right = predicted == labels
        for index, kind in enumerate(KINDS):
            chosen = weights & (kinds == index)
            counts[kind] += int(chosen.sum())
            hits[kind] += int((right & chosen).sum())
        targets.update(labels[weights].tolist())
    total = sum(counts.values())
    if not total:
        raise ValueError("no weighted MLM predictions in the batches given")
    result = {"positions": float(total),
              "unigram_accuracy": targets.most_common(1)[0][1] / total}
    for kind in KINDS:
        if counts[kind]:
            result[f"{kind}_accuracy"] = hits[kind] / counts[kind]
            result[f"{kind}_share"] = counts[kind] / total
    return result
