"""Learning a WordPiece vocabulary from a corpus (tensorflow-text's BERT vocabulary learner)."""
from __future__ import annotations

from typing import Iterable, List, Sequence, Union

import tensorflow as tf
from tensorflow_text.tools.wordpiece_vocab import bert_vocab_from_dataset

from tfmodels.files import atomic_write_text
from tfmodels.tokenizers.wordpiece import SPECIAL_TOKENS


def learn_wordpiece_vocab(texts: Union[Iterable[str], tf.data.Dataset], vocab_size: int,
                          lower_case: bool = True,
                          reserved_tokens: Sequence[str] = SPECIAL_TOKENS) -> List[str]:
    """Returns a vocabulary of about `vocab_size` tokens, `reserved_tokens` first.

    About: the learner searches for a count threshold whose vocabulary is near the target,
    and on a small corpus the nearest can be well off (WikiText-2 validation, target 8,000:
    12,055 tokens); use len() of the result, never the target, as the vocabulary size.

    texts: python strings (streamed into a tf.data pipeline) or a dataset of string scalars.
    The learner splits words the way BERT's basic tokenizer does, so the result suits
    `WordPieceTokenizer` with the same `lower_case`.
    """
    if not isinstance(texts, tf.data.Dataset):
        lines = texts
        texts = tf.data.Dataset.from_generator(
            lambda: iter(lines), output_signature=tf.TensorSpec((), tf.string))
    vocab = bert_vocab_from_dataset.bert_vocab_from_dataset(
        texts.batch(1024).prefetch(2), vocab_size=vocab_size,
        reserved_tokens=list(reserved_tokens),
        bert_tokenizer_params={"lower_case": lower_case},
        # lower_thresh bounds the learner's search for a count threshold from below; its
        # default (10) leaves small corpora with little more than the alphabet.
        learn_params={"lower_thresh": 1})
    if len(vocab) <= len(reserved_tokens):
        raise ValueError("the corpus is empty: no vocabulary beyond the reserved tokens")
    return vocab


def write_vocab_file(tokens: Sequence[str], path: str) -> None:
    """Writes one token per line, atomically (a temp file renamed over `path`)."""
    atomic_write_text(path, "".join(token + "\n" for token in tokens))
