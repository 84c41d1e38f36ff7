"""Extractive QA (SQuAD v1.1 / v2.0; BERT only): start / end logits over every doc_stride window
of a long context, the best span over windows, official EM / F1, and v2.0's null answer with a
threshold tuned on dev."""
from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Tuple

import numpy as np

from finetune import predictions as prediction_files
from finetune import python_inputs
from finetune.examples import SpanExample
from finetune.export.heads import SpanHead
from finetune.features.squad import encode_span_examples, predict_answers
from finetune.kinds.base import Decoded, DecodeOptions, TaskKind
from finetune.losses import batch_label, span_loss
from finetune.models import SpanModel


# The SQuAD scripts' metric names that are percentages (exact, exact_match, f1, HasAns_f1 ...).
PERCENT_METRIC = re.compile(r"(^|_)(exact|exact_match|f1)$")


class SpanKind(TaskKind):
    name = "span"
    input_formats = ("bert",)
    output_keys = ("start_logits", "end_logits")
    sequence_outputs = True
    encode_option_names = ("doc_stride", "max_query_length")

    def num_labels(self, task) -> int:
        return 2

    def encode_options(self, task, input_format, settings) -> Dict[str, Any]:
        return {"doc_stride": settings.doc_stride, "max_query_length": settings.max_query_length}

    def encode(self, examples, input_format, tokenizer, seq_length, label_names=(), **options):
        return encode_span_examples(examples, tokenizer, seq_length, **options)

    def holdout_group(self):
        # Questions on one context must not straddle a held-out cut.
        return lambda example: example.article

    def head_options(self, task, input_format, options):
        # run_squad.py: no dropout before the span layer.
        return {k: v for k, v in options.items() if k != "dropout"}

    def build_model(self, task, backbone, **options):
        return SpanModel(backbone, **options)

    def head_loss(self, outputs, batch) -> Dict:
        return span_loss(outputs["start_logits"], outputs["end_logits"],
                         batch_label(batch, "start"), batch_label(batch, "end"))

    def decode(self, outputs, examples, features, options: DecodeOptions) -> Decoded:
        answers = predict_answers(outputs["start_logits"], outputs["end_logits"],
                                  features.metadata, n_best_size=options.n_best_size,
                                  max_answer_length=options.max_answer_length, version_2=False)
        ordered = [answers[e.qid] for e in examples]
        return Decoded([a.text for a in ordered], null_scores=[a.score_diff for a in ordered])

    def gold(self, example, task) -> List[str]:
        return [text for text, _ in example.answers] or [""]

    def score(self, task, examples, decoded, options: DecodeOptions) -> Dict[str, float]:
        """SQuAD v2.0 also tunes the null threshold on these examples (the official
        `best_f1_thresh`) and reports the metrics at it as the main numbers."""
        if not task.null_answers:
            return super().score(task, examples, decoded, options)
        gold = [self.gold(e, task) for e in examples]
        metrics = task.metric(gold, decoded.predictions, null_scores=decoded.null_scores,
                              threshold=options.null_threshold)
        if not options.tune_null_threshold:
            return {**metrics, "null_threshold": options.null_threshold}
        tuned = metrics["best_f1_thresh"]
        return {**task.metric(gold, decoded.predictions, null_scores=decoded.null_scores,
                              threshold=tuned), "null_threshold": tuned}

    def final_predictions(self, task, decoded, threshold) -> List[str]:
        if not task.null_answers:
            return decoded.predictions
        return ["" if s > threshold else p
                for p, s in zip(decoded.predictions, decoded.null_scores)]

    def write_task_predictions(self, task, examples, decoded, predictions, path) -> List[str]:
        written = prediction_files.write_squad_predictions(
            os.path.join(os.path.dirname(path), "predictions.json"), {e.qid: p for e, p in zip(examples, predictions)},
            null_odds=({e.qid: s for e, s in zip(examples, decoded.null_scores)}
                       if task.null_answers else None))
        return list(written.values())

    def serving_head(self, spec):
        return SpanHead(spec)

    def check_serving(self, seq_length, max_query_length) -> None:
        if seq_length - max_query_length - 3 < 1:
            raise ValueError(f"seq_length {seq_length} leaves no context window after a "
                             f"{max_query_length}-piece question, [CLS] and two [SEP]")

    def api_examples(self, x, y, model) -> List[SpanExample]:
        """(question, context) pairs or {"question", "context"}; gold answers are (text,
        character offset) pairs, a list of them, or answer texts (found in the context)."""
        text = python_inputs.text
        rows = (list(zip(x["question"], x["context"])) if isinstance(x, dict)
                else [tuple(r) for r in x])
        python_inputs.check_count(len(rows), y, "questions", "answers")
        examples = []
        for i, row in enumerate(rows):
            if len(row) != 2:
                raise ValueError(f"item {i}: expected (question, context), got {row!r}")
            question, context = (text(v) for v in row)
            answers: Tuple[Tuple[str, int], ...] = ()
            if y is not None:
                gold = y[i]
                if isinstance(gold, (str, bytes)):
                    gold = [(text(gold), context.find(text(gold)))]
                elif len(gold) == 2 and isinstance(gold[1], (int, np.integer)):
                    gold = [gold]
                answers = tuple((text(t), int(start)) for t, start in gold)
            examples.append(SpanExample(str(i), question, context, answers))
        return examples

    def api_predictions(self, decoded, model) -> List[str]:
        return self.api_labels(decoded, model)

    def api_scores(self, scores: Dict[str, float]) -> Dict[str, float]:
        """The official SQuAD scripts' percentages (EM, F1 and their HasAns / NoAns parts) as
        fractions; counts and the null threshold as they are."""
        return {k: v / 100.0 if PERCENT_METRIC.search(k) else v for k, v in scores.items()}


SPAN = SpanKind()
