"""Token tagging (CoNLL-2003 NER; BERT only): a tag per token, read at each word's first
sub-token, scored with entity-level F1."""
from __future__ import annotations

from typing import Dict, List

from finetune import predictions as prediction_files
from finetune import python_inputs
from finetune.examples import TokenExample
from finetune.export.heads import TaggerHead
from finetune.features.tokens import decode_word_predictions, encode_token_examples
from finetune.kinds.base import Decoded, DecodeOptions, TaskKind
from finetune.losses import batch_label, token_classification_loss
from finetune.models import TokenClassifier


class TaggingKind(TaskKind):
    name = "token_classification"
    input_formats = ("bert",)
    sequence_outputs = True

    def encode(self, examples, input_format, tokenizer, seq_length, label_names=(), **options):
        return encode_token_examples(examples, tokenizer, seq_length, label_names)

    def build_model(self, task, backbone, **options):
        return TokenClassifier(backbone, self.num_labels(task), **options)

    def head_loss(self, outputs, batch) -> Dict:
        return token_classification_loss(outputs["logits"], batch_label(batch, "label"))

    def decode(self, outputs, examples, features, options: DecodeOptions) -> Decoded:
        logits = outputs["logits"]
        return Decoded([decode_word_predictions(logits[i], feature)
                        for i, feature in enumerate(features.metadata)])

    def gold(self, example, task) -> List[str]:
        return list(example.tags)

    def write_task_predictions(self, task, examples, decoded, predictions, path) -> List[str]:
        return [prediction_files.write_ner_jsonl(path, examples, predictions)]

    def serving_head(self, spec):
        return TaggerHead(spec)

    def api_examples(self, x, y, model) -> List[TokenExample]:
        """Sentences as lists of words or strings (split on whitespace); tags per word."""
        text = python_inputs.text
        sentences = [text(s).split() if isinstance(s, (str, bytes)) else [text(w) for w in s]
                     for s in x]
        python_inputs.check_count(len(sentences), y, "sentences", "tag lists")
        return [TokenExample(str(i), tuple(words),
                             None if y is None else tuple(text(t) for t in y[i]))
                for i, words in enumerate(sentences)]

    def api_predictions(self, decoded, model) -> List[List[str]]:
        return self.api_labels(decoded, model)


TAGGING = TaggingKind()
