"""Input encoders: examples (finetune.examples) -> fixed-length numpy features for BERT or GPT-1.

One call for every task kind, so the fine-tuning loop does not branch per dataset:

    encoded = encode_examples(examples, kind, model, tokenizer, seq_length,
                              label_names=spec.label_names, **task_options)
    dataset = tf.data.Dataset.from_tensor_slices((encoded.inputs(), encoded.labels()))

Arrays are stored with seq_length columns; fine-tuning batches them by length and trims each
batch to its longest row (finetune.batching), or keeps seq_length under --pad_to_max_length
(TPUs). Tokenization and packing run the in-graph code exported models run
(tfmodels.preprocessing, finetune.text_inputs), batched over all examples.

Arrays (all int32 unless noted; every kind also has `example_index` [n]):
  kind                  inputs                                         labels
  classification        BERT input_ids/segment_ids/input_mask [n, s]   label [n]
   / regression         GPT  input_ids/input_mask [n, s],              label [n] float32
                             classify_position [n]; symmetric: [n, 2, s] and [n, 2]
  multiple_choice       as above with a choice axis: [n, c, s], classify_position [n, c]
                                                                       label [n]
  span (BERT)           one row per window; metadata: SpanFeature      start_position,
                                                                       end_position [n]
  token_classification  BERT inputs; label_mask [n, s]; metadata:      label_ids [n, s]
   (BERT)               TokenFeature                                   (-1 = ignore), label_mask
Label arrays are present only when the examples are labelled (not for test files).

Modules: common (features container, chunked tokenization, labels, errors), sequence (classification,
regression, pairs, multiple choice), squad (windows, span labels, `best_span` decoding),
tokens (NER first-sub-token labels, `decode_word_predictions`).
"""
from __future__ import annotations

import numbers
from typing import Any, Sequence

from finetune.features.common import (BERT_INPUT_KEYS, GPT_INPUT_KEYS, INPUT_FORMATS, SEQUENCE_KEYS,
                                      EncodedFeatures)
from finetune.features.sequence import encode_choice_examples, encode_text_examples
from finetune.features.squad import (SpanFeature, SpanPrediction, best_span,
                                     encode_span_examples, predict_answers)
from finetune.features.tokens import (IGNORE_LABEL, TokenFeature, decode_word_predictions,
                                      encode_token_examples)

__all__ = [
    "INPUT_FORMATS", "BERT_INPUT_KEYS", "GPT_INPUT_KEYS", "IGNORE_LABEL", "EncodedFeatures",
    "SpanFeature", "SpanPrediction", "TokenFeature", "encode_examples", "encode_text_examples",
    "encode_choice_examples", "encode_span_examples", "encode_token_examples", "best_span",
    "predict_answers", "decode_word_predictions", "SEQUENCE_KEYS",
]


def encode_examples(examples: Sequence[Any], kind: Any, model: str, tokenizer: Any,
                    seq_length: int, label_names: Sequence[str] = (),
                    **task_options: Any) -> EncodedFeatures:
    """Examples of one task -> EncodedFeatures (arrays, input/label keys, metadata).

    kind: a finetune.kinds.TaskKind or its name (a TaskSpec's `kind`); model: the input format,
    "bert" (WordPieceTokenizer) or "gpt" (GptBpeTokenizer).
    label_names: class names (classification) or tags (token_classification).
    task_options: the kind's `encode_option_names` (symmetric for GPT-1 pairs; doc_stride and
    max_query_length for span).
    """
    from finetune import kinds  # here: the kinds' modules import this package's encoders
    kind = kinds.get_kind(kind)
    if model not in INPUT_FORMATS:
        raise ValueError(f"model must be one of {INPUT_FORMATS}, got {model!r}")
    if model not in kind.input_formats:
        raise ValueError(f"{kind.name} is a BERT task; GPT-1 has no {kind.name} input transform")
    unknown = sorted(set(task_options) - set(kind.encode_option_names))
    if unknown:
        raise ValueError(f"unknown options {unknown} for kind {kind.name!r}; "
                         f"accepted: {list(kind.encode_option_names)}")
    if isinstance(seq_length, bool) or not isinstance(seq_length, numbers.Integral) \
            or seq_length < 1:
        raise ValueError(f"seq_length must be a positive integer, got {seq_length!r}")
    return kind.encode(examples, model, tokenizer, int(seq_length), label_names, **task_options)
