"""Fine-tuning from Python, in the Keras idiom: raw strings in, probabilities and task metrics out.

    from finetune import TextClassifier
    clf = TextClassifier.from_checkpoint(minilm_dir, num_classes=2, seq_length=64)
    clf.fit(train_texts, train_labels, epochs=1, batch_size=32)
    clf.predict(["a gripping, beautiful film"])        # probabilities [n, classes]
    clf.evaluate(dev_texts, dev_labels)               # {"accuracy": ...} (the task's metrics)
    clf.save("sst2.keras")                            # keras.saving.load_model gives it back
    clf.export("exports/sst2")                        # TF Serving layout, raw text in

Every class here is a `FinetunedModel`: a `keras.Model` holding the fine-tuning TaskModel
(finetune.models), the model's tokenizer and its task (a finetune.tasks.TaskSpec, whose kind
says how raw inputs become examples and what `predict` returns: finetune.kinds). Nothing here is
a second implementation of the binaries' pieces:
- text -> rows: the kind's `encode`, i.e. the in-graph `TextPacker` that the exports run;
- training: `finetune.driver.train`, the loop the fine-tuning binary runs (AdamW with the
  papers' decay exclusions and warmup + linear decay, global-norm clipping of the all-reduced
  gradient, optional XLA, length-bucketed batches), with Keras callbacks and a History of
  per-epoch means;
- prediction and evaluation: `finetune.evaluation` (length-ordered batches) and the kind's
  decoding and metric;
- export: `finetune.export.export_saved_model`.

Inputs: a list (or array) of strings; for pairs, a list of (text_a, text_b) tuples or a dict
{"text_a": [...], "text_b": [...]}; or a `tf.data.Dataset` of those (batched or not), optionally
yielding (texts, labels). Labels: class ids, label names, or floats (regression).
Create a model inside `strategy.scope()` to train under a tf.distribute strategy.

The classes: TextClassifier (one text or a pair), TextRegressor (STS-B), MultipleChoice (SWAG,
RACE, Story Cloze), TokenTagger (CoNLL NER; BERT), QuestionAnswerer (SQuAD v1.1 / v2.0 over
strided windows; BERT), for BERT and GPT-1 (GPT-1's aux LM and symmetric similarity as the
binaries do), and LanguageModel (the GPT-1 LM: generation and perplexity).
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Dict, List, Optional, Sequence, Union

import keras
import numpy as np
import tensorflow as tf

from finetune import kinds
from finetune import metrics as task_metrics
from finetune.driver import TrainOptions, mean_loss, train
from finetune.evaluation import predict_and_decode
from finetune.features import encode_examples
from finetune.kinds import DecodeOptions
from finetune.models import (as_backbone, backbone_architecture, backbone_input_format,
                             build_task_model)
from finetune.python_inputs import Texts, inputs_and_labels, text
from finetune.tasks import TaskSpec, get_task
from tfmodels.architectures import check_architecture, input_format
from tfmodels.tokenizers.loading import load_tokenizer


def load_backbone_and_tokenizer(checkpoint: str, model: str = "bert", vocab_file: str = "",
                                bpe_encoder_file: str = "", bpe_merges_file: str = "",
                                lower_case: bool = True):
    """The backbone a checkpoint holds (any format fine-tuning reads) and its tokenizer (the
    vocabulary beside it unless given), checked against each other."""
    from tfmodels.checkpoints.formats import bpe_files, load_checkpoint, wordpiece_vocab_file
    check_architecture(model, "model")
    backbone = as_backbone(load_checkpoint(checkpoint))
    if backbone_architecture(backbone) != model:
        raise ValueError(f"{checkpoint} holds a {type(backbone).__name__}, not a {model} model")
    if input_format(model) == "bert":
        tokenizer = load_tokenizer("bert", wordpiece_vocab_file(checkpoint, vocab_file),
                                   lower_case=lower_case)
    else:
        files = bpe_files(checkpoint, bpe_encoder_file, bpe_merges_file)
        tokenizer = load_tokenizer("gpt", encoder_file=files["encoder_file"],
                                   merges_file=files["merges_file"])
    if tokenizer.vocab_size != backbone.config.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} ids but the model's embedding "
                         f"has {backbone.config.vocab_size} rows: vocabulary and checkpoint do "
                         "not match")
    return backbone, tokenizer


def _checked_task(task: str, kind) -> TaskSpec:
    spec = get_task(task)
    if spec.kind is not kind:
        raise ValueError(f"task {task!r} is a {spec.kind.name} task, not a {kind.name} task")
    return spec


def _refuse_unknown(method: str, options: Dict[str, Any]) -> None:
    if options:
        raise TypeError(f"{method}() got unexpected keyword arguments: {', '.join(sorted(options))}")


class FinetunedModel(keras.Model):
    """A TaskModel with its tokenizer and task: raw inputs in, the task's answers out.

    Subclasses say which kind of task they hold (`task_spec_for`) and how `from_checkpoint`
    builds them; every method below is the kind's (finetune.kinds), so the classes share them.
    call(model inputs) -> the TaskModel's output (its only one, e.g. logits; or the dict).
    """

    def __init__(self, task_model, tokenizer=None, seq_length: int = 128, task: str = "",
                 label_names: Sequence[str] = (), pair: bool = False, regression: bool = False,
                 lower_case: bool = True, lm_weight: float = 0.5, num_choices: int = 0,
                 doc_stride: int = 128, max_query_length: int = 64, max_answer_length: int = 30,
                 **kwargs):
        super().__init__(**kwargs)
        self.task_model = task_model
        self.tokenizer = tokenizer
        self.seq_length = int(seq_length)
        self.task = task
        self.label_names = tuple(label_names)
        self.pair = bool(pair)
        self.regression = bool(regression)
        self.lower_case = bool(lower_case)
        self.lm_weight = float(lm_weight)
        self.num_choices = int(num_choices)
        self.doc_stride = int(doc_stride)
        self.max_query_length = int(max_query_length)
        self.max_answer_length = int(max_answer_length)
        self.input_format = backbone_input_format(task_model)
        self.task_spec = self.task_spec_for(task, self.label_names, self.pair, self.regression,
                                            self.num_choices)
        self.kind = self.task_spec.kind
        # The task model carries its own weights; this wrapper adds none.
        self.built = bool(task_model.built)

    @classmethod
    def task_spec_for(cls, task: str, label_names: Sequence[str], pair: bool, regression: bool,
                      num_choices: int) -> TaskSpec:
        raise NotImplementedError

    @classmethod
    def from_preset(cls, name: str, **options) -> "FinetunedModel":
        """`from_checkpoint` on a released checkpoint by name (tfmodels/presets.py: fetched,
        verified and converted on first use, then from the cache), e.g.
        `TextClassifier.from_preset("bert_base_uncased", num_classes=2)`. The preset's
        architecture and casing are the defaults of `model` and `lower_case`."""
        import inspect
        from tfmodels.presets import PRESET_PREFIX, get_preset
        preset = get_preset(name)
        accepts = inspect.signature(cls.from_checkpoint).parameters
        if "model" in accepts or any(p.kind is p.VAR_KEYWORD for p in accepts.values()):
            options.setdefault("model", preset.architecture)
        options.setdefault("lower_case", preset.lower_case)
        return cls.from_checkpoint(PRESET_PREFIX + preset.name, **options)

    @property
    def decode_options(self) -> DecodeOptions:
        return DecodeOptions(max_answer_length=self.max_answer_length)

    # ---- Keras ---------------------------------------------------------------------------------

    def call(self, inputs, training=None):
        outputs = self.task_model(inputs, training=training)
        keys = self.kind.output_keys
        return outputs[keys[0]] if len(keys) == 1 else outputs

    def get_config(self):
        return {**super().get_config(),
                "task_model": keras.saving.serialize_keras_object(self.task_model),
                "seq_length": self.seq_length, "task": self.task,
                "label_names": list(self.label_names), "pair": self.pair,
                "regression": self.regression, "lower_case": self.lower_case,
                "lm_weight": self.lm_weight, "num_choices": self.num_choices,
                "doc_stride": self.doc_stride, "max_query_length": self.max_query_length,
                "max_answer_length": self.max_answer_length}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        task_model = keras.saving.deserialize_keras_object(config.pop("task_model"))
        return cls(task_model, **config)

    def save_assets(self, dir_path):
        """The vocabulary travels inside the .keras file (keras.saving's assets)."""
        from finetune.export import write_vocab_files
        write_vocab_files(self.tokenizer, dir_path)

    def load_assets(self, dir_path):
        if self.input_format == "bert":
            self.tokenizer = load_tokenizer("bert", os.path.join(dir_path, "vocab.txt"),
                                            lower_case=self.lower_case)
        else:
            self.tokenizer = load_tokenizer("gpt", encoder_file=os.path.join(dir_path,
                                                                             "vocab.json"),
                                            merges_file=os.path.join(dir_path, "merges.txt"))

    # ---- raw inputs in -------------------------------------------------------------------------

    def encode(self, x: Texts, y: Optional[Sequence[Any]] = None):
        """Inputs (and labels) -> (examples, EncodedFeatures), through the kind's encoder: the
        in-graph packer the exports run."""
        x, y = inputs_and_labels(x, y)
        examples = self.kind.api_examples(x, y, self)
        if not examples:
            raise ValueError("no texts")
        options = self.kind.encode_options(self.task_spec, self.input_format, self)
        return examples, encode_examples(examples, self.kind, self.input_format, self.tokenizer,
                                         self.seq_length, label_names=self.label_names,
                                         **options)

    def fit(self, x: Texts = None, y: Optional[Sequence[Any]] = None, epochs: float = 1,
            batch_size: int = 32, learning_rate: float = 5e-5, warmup_fraction: float = -1.0,
            weight_decay: float = 0.01, clip_norm: float = 1.0, jit_compile: bool = False,
            pad_to_max_length: bool = False, seed: int = 0, verbose: int = 1,
            callbacks: Sequence[keras.callbacks.Callback] = (), validation_data=None,
            **unknown):
        """Fine-tunes on raw inputs and labels (finetune.driver); returns Keras' History of
        per-epoch mean loss and metrics.

        epochs may be fractional; the schedule (warmup_fraction: BERT 0.1, GPT-1 0.002 when
        < 0, then linear decay) spans this call. verbose 1: a progress line on stderr.
        validation_data: (inputs, labels), or a dataset of both: after every epoch `val_loss`
          and the task's metrics as `val_<metric>` join the History and the callbacks' logs
          (keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max",
          restore_best_weights=True) keeps the best epoch's weights).
        """
        from finetune.config import WARMUP_FRACTION
        _refuse_unknown("fit", unknown)
        _, features = self.encode(x, y)
        if not features.label_keys:
            raise ValueError("fit needs labels (y, or (texts, labels) from the dataset)")
        if warmup_fraction < 0:
            warmup_fraction = WARMUP_FRACTION[self.input_format]
        options = TrainOptions(
            learning_rate=learning_rate, batch_size=batch_size, epochs=epochs,
            warmup_fraction=warmup_fraction, weight_decay=weight_decay, clip_norm=clip_norm,
            lm_weight=self.lm_weight, jit_compile=jit_compile,
            pad_to_max_length=pad_to_max_length, seed=seed, log_every=math.inf)
        validate = None
        if validation_data is not None:
            val_x, val_y = (validation_data, None) if isinstance(
                validation_data, tf.data.Dataset) else validation_data
            val_examples, val_features = self.encode(val_x, val_y)
            if not val_features.label_keys:
                raise ValueError("validation_data needs labels: (inputs, labels)")

            def validate_epoch(step: int) -> Dict[str, float]:
                decoded = self._decode(val_examples, val_features, 64)
                scores = self.kind.score(self.task_spec, val_examples, decoded,
                                         self.decode_options)
                return {"val_loss": mean_loss(self.task_model, self.task_spec, val_features,
                                              self.lm_weight),
                        **{f"val_{k}": float(v) for k, v in scores.items()}}
            validate = validate_epoch
        trained = train(self.task_model, self.task_spec, features, options,
                        self.distribute_strategy, callbacks, callback_model=self,
                        log=lambda message: None, label="fit", verbose=bool(verbose),
                        validate=validate)
        self.history = trained.history
        return trained.history

    def _decode(self, examples, features, batch_size: int, verbose: Union[str, int] = 0,
                label: str = "predict"):
        """Decoded outputs; verbose as Keras's predict: "auto" draws a progress line on stderr
        when the rows take more than one batch, 1 always, 0 never."""
        if verbose not in ("auto", 0, 1, False, True):
            raise ValueError(f'verbose must be "auto", 0 or 1, got {verbose!r}')
        shown = len(features) > batch_size if verbose == "auto" else bool(verbose)
        return predict_and_decode(self.task_model, self.task_spec, examples, features,
                                  self.distribute_strategy, batch_size, self.decode_options,
                                  progress_label=label if shown else None)

    def predict(self, x: Texts, batch_size: int = 64, verbose: Union[str, int] = "auto",
                **unknown):
        """The kind's predictions: class probabilities [n, classes], scores [n] (regression),
        ending probabilities [n, choices], tags per word, or answer texts (v2.0: "" when the
        null score beats the threshold). verbose: "auto" (a progress line past one batch), 0
        or 1, as in Keras."""
        _refuse_unknown("predict", unknown)
        examples, features = self.encode(x)
        return self.kind.api_predictions(
            self._decode(examples, features, batch_size, verbose), self)

    def predict_labels(self, x: Texts, batch_size: int = 64,
                       verbose: Union[str, int] = "auto") -> List[Any]:
        """The answer for every input: a label name, an ending index, tags or an answer."""
        examples, features = self.encode(x)
        return self.kind.api_labels(self._decode(examples, features, batch_size, verbose), self)

    def evaluate(self, x: Texts = None, y: Optional[Sequence[Any]] = None, batch_size: int = 64,
                 verbose: Union[str, int] = "auto", **unknown) -> Dict[str, float]:
        """The task's metrics (accuracy, F1, MCC, Pearson / Spearman, EM, entity F1 ...), as
        the fine-tuning binary scores them, and beside each `constant_answer_<metric>`: what
        answering every example with the commonest label (regression: the mean target) scores
        on the same data, the line a model must beat (absent for spans and tags)."""
        from finetune.evaluation import constant_answer_scores
        _refuse_unknown("evaluate", unknown)
        examples, features = self.encode(x, y)
        if not features.label_keys:
            raise ValueError("evaluate needs labels (y, or (texts, labels) from the dataset)")
        decoded = self._decode(examples, features, batch_size, verbose, label="evaluate")
        scores = self.kind.api_scores({k: float(v) for k, v in self.kind.score(
            self.task_spec, examples, decoded, self.decode_options).items()})
        baseline = constant_answer_scores(self.task_spec, examples, self.decode_options)
        return {**scores, **{f"constant_answer_{k}": v for k, v in baseline.items()}}

    def export(self, export_dir: str, seq_length: Optional[int] = None,
               ids_only: bool = False) -> str:
        """TF Serving layout `<export_dir>/<next version>/` (raw text in: the same packer);
        returns the version folder."""
        from finetune.export import export_saved_model
        base, name = os.path.split(os.path.normpath(export_dir))
        return export_saved_model(self.task_model, self.task_spec, self.tokenizer, base or ".",
                                  name, seq_length or self.seq_length, ids_only=ids_only,
                                  max_query_length=self.max_query_length,
                                  max_answer_length=self.max_answer_length)


def _new_head(spec: TaskSpec, checkpoint: str, model: str, vocab_file: str,
              bpe_encoder_file: str, bpe_merges_file: str, lower_case: bool, seq_length: int,
              seed: int, lm_weight: float = 0.0, **options):
    """(a fresh TaskModel for `spec` on the checkpoint's backbone, the tokenizer). GPT-1's
    head also returns the aux LM's logits when lm_weight > 0."""
    backbone, tokenizer = load_backbone_and_tokenizer(
        checkpoint, model, vocab_file, bpe_encoder_file, bpe_merges_file, lower_case)
    if backbone_input_format(backbone) == "gpt":
        options["aux_lm"] = lm_weight > 0
    if not 1 <= seq_length <= backbone.config.max_positions:
        raise ValueError(f"seq_length must be in 1..{backbone.config.max_positions}, got "
                         f"{seq_length}")
    options = spec.kind.head_options(spec, backbone_input_format(backbone), options)
    return build_task_model(spec, backbone, name=spec.name, seed=seed, **options), tokenizer


class TextClassifier(FinetunedModel):
    """BERT or GPT-1 fine-tuned to classify a text or a text pair (or to score it, with
    `regression`); see the module docstring. Build it with `from_checkpoint`;
    `keras.saving.load_model` restores a saved one.

    `predict` gives class probabilities [n, classes] (regression: scores [n]).
    """

    @classmethod
    def task_spec_for(cls, task, label_names, pair, regression, num_choices) -> TaskSpec:
        """A registered task (its labels, pair-ness, metric), or a custom one: accuracy (with
        F1 for two classes), or Pearson / Spearman for regression."""
        if task:
            return get_task(task)
        if regression:
            return TaskSpec(name="text_regressor", kind=kinds.REGRESSION, read=None,
                            metric=task_metrics.pearson_spearman, main_metric="corr", files={},
                            is_pair=pair)
        if len(label_names) < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {len(label_names)}")
        metric = task_metrics.f1_and_accuracy if len(label_names) == 2 else task_metrics.accuracy
        return TaskSpec(name="text_classifier", kind=kinds.CLASSIFICATION, read=None,
                        metric=metric, main_metric="accuracy", files={},
                        label_names=tuple(label_names), is_pair=pair)

    @classmethod
    def from_checkpoint(cls, checkpoint: str, num_classes: int = 2, seq_length: int = 128,
                        task: str = "", label_names: Sequence[str] = (), pair: bool = False,
                        regression: bool = False, model: str = "bert", vocab_file: str = "",
                        bpe_encoder_file: str = "", bpe_merges_file: str = "",
                        lower_case: bool = True, dropout: float = 0.1, lm_weight: float = 0.5,
                        seed: int = 0) -> "TextClassifier":
        """A new head on a pretrained checkpoint (any format `bert-gpt-finetune` reads).

        task: a registered task (e.g. "sst2", "mrpc", "stsb"): its labels, pair-ness and
          metrics; else num_classes / label_names / pair / regression describe it.
        seed: the head's initialisation and dropout.
        """
        names = tuple(label_names) or tuple(str(i) for i in range(num_classes))
        spec = cls.task_spec_for(task, () if regression else names, pair, regression, 0)
        task_model, tokenizer = _new_head(spec, checkpoint, model, vocab_file, bpe_encoder_file,
                                          bpe_merges_file, lower_case, seq_length, seed,
                                          lm_weight, dropout=dropout)
        return cls(task_model, tokenizer, seq_length, task=task, label_names=spec.label_names,
                   pair=spec.is_pair, regression=spec.kind is kinds.REGRESSION,
                   lower_case=lower_case, lm_weight=lm_weight)


class TextRegressor(TextClassifier):
    """A TextClassifier that predicts one score per text or pair (STS-B): `predict` gives the
    scores, `evaluate` Pearson / Spearman."""

    @classmethod
    def from_checkpoint(cls, checkpoint: str, seq_length: int = 128, task: str = "",
                        pair: bool = True, **options) -> "TextRegressor":
        if task:
            _checked_task(task, kinds.REGRESSION)
        return super().from_checkpoint(checkpoint, num_classes=1, seq_length=seq_length,
                                       task=task, pair=pair, regression=True, **options)


class MultipleChoice(FinetunedModel):
    """Picks one of `num_choices` endings (SWAG, RACE, Story Cloze): one row per candidate (BERT
    `[CLS] context [SEP] question ending [SEP]`, GPT-1 `[s] context question [$] ending [e]`),
    one score each, softmax over the candidates.

        mc = MultipleChoice.from_checkpoint(minilm_dir, num_choices=2, seq_length=128)
        mc.fit([(context, question, (ending_0, ending_1)), ...], [1, ...])
        mc.predict({"context": [...], "question": [...], "endings": [[e0, e1], ...]})  # [n, 2]

    question may be "" (Story Cloze). Labels: the index of the right ending.
    """

    @classmethod
    def task_spec_for(cls, task, label_names, pair, regression, num_choices) -> TaskSpec:
        if task:
            return _checked_task(task, kinds.MULTIPLE_CHOICE)
        return TaskSpec(name="multiple_choice", kind=kinds.MULTIPLE_CHOICE, read=None,
                        metric=task_metrics.accuracy, main_metric="accuracy", files={},
                        num_choices=num_choices, is_pair=True)

    @classmethod
    def from_checkpoint(cls, checkpoint: str, num_choices: int = 4, seq_length: int = 128,
                        task: str = "", model: str = "bert", vocab_file: str = "",
                        bpe_encoder_file: str = "", bpe_merges_file: str = "",
                        lower_case: bool = True, dropout: float = 0.1, lm_weight: float = 0.5,
                        seed: int = 0) -> "MultipleChoice":
        spec = cls.task_spec_for(task, (), True, False, num_choices)
        task_model, tokenizer = _new_head(spec, checkpoint, model, vocab_file, bpe_encoder_file,
                                          bpe_merges_file, lower_case, seq_length, seed,
                                          lm_weight, dropout=dropout)
        return cls(task_model, tokenizer, seq_length, task=task, pair=True,
                   lower_case=lower_case, lm_weight=lm_weight, num_choices=spec.num_choices)


class TokenTagger(FinetunedModel):
    """One tag per word (CoNLL-2003 NER; BERT): the tag is read at each word's first piece.

        tagger = TokenTagger.from_checkpoint(minilm_dir, task="conll2003", seq_length=128)
        tagger.fit([["EU", "rejects", "German", "call"], ...], [["B-ORG", "O", "B-MISC", "O"]])
        tagger.predict(["Peter Blackburn visits Brussels"])  # [["B-PER", "I-PER", "O", "B-LOC"]]

    Sentences are lists of words or strings (split on whitespace); `evaluate` gives entity F1.
    """

    @classmethod
    def task_spec_for(cls, task, label_names, pair, regression, num_choices) -> TaskSpec:
        if task:
            return _checked_task(task, kinds.TAGGING)
        if len(label_names) < 2:
            raise ValueError(f"a tagger needs at least 2 tags, got {list(label_names)}")
        return TaskSpec(name="token_tagger", kind=kinds.TAGGING, read=None,
                        metric=task_metrics.ner_f1, main_metric="f1", files={},
                        label_names=tuple(label_names))

    @classmethod
    def from_checkpoint(cls, checkpoint: str, tags: Sequence[str] = (), seq_length: int = 128,
                        task: str = "", vocab_file: str = "", lower_case: bool = True,
                        dropout: float = 0.1, seed: int = 0) -> "TokenTagger":
        spec = cls.task_spec_for(task, tuple(tags), False, False, 0)
        task_model, tokenizer = _new_head(spec, checkpoint, "bert", vocab_file, "", "",
                                          lower_case, seq_length, seed, dropout=dropout)
        return cls(task_model, tokenizer, seq_length, task=task, label_names=spec.label_names,
                   lower_case=lower_case)


class QuestionAnswerer(FinetunedModel):
    """Extractive QA (SQuAD v1.1 / v2.0; BERT): the answer is a span of the context, read from
    start / end logits over every doc_stride window of a long context.

        qa = QuestionAnswerer.from_checkpoint(minilm_dir, seq_length=256)
        qa.fit([(question, context), ...], [(answer_text, answer_char_start), ...])
        qa.predict([("Who wrote it?", "It was written by Ann in 1990.")])   # ["Ann"]

    Gold answers are (text, character offset) pairs, or for evaluation any answer texts;
    `evaluate` gives exact match and F1 with the official normalisation, as fractions (the
    API's one scale; results.json keeps the official scripts' percentages).
    """

    @classmethod
    def task_spec_for(cls, task, label_names, pair, regression, num_choices) -> TaskSpec:
        return _checked_task(task or "squad_v1", kinds.SPAN)

    @classmethod
    def from_checkpoint(cls, checkpoint: str, seq_length: int = 384, doc_stride: int = 128,
                        max_query_length: int = 64, max_answer_length: int = 30,
                        version_2: bool = False, vocab_file: str = "", lower_case: bool = True,
                        seed: int = 0) -> "QuestionAnswerer":
        task = "squad_v2" if version_2 else "squad_v1"
        spec = cls.task_spec_for(task, (), True, False, 0)
        task_model, tokenizer = _new_head(spec, checkpoint, "bert", vocab_file, "", "",
                                          lower_case, seq_length, seed)
        return cls(task_model, tokenizer, seq_length, task=task, pair=True,
                   lower_case=lower_case, doc_stride=doc_stride,
                   max_query_length=max_query_length, max_answer_length=max_answer_length)


for _cls in (TextClassifier, TextRegressor, MultipleChoice, TokenTagger, QuestionAnswerer):
    keras.saving.register_keras_serializable(package="finetune")(_cls)

# The API class that holds a task of each kind (the language-model kind has none: its models
# are GptLanguageModel / LanguageModel).
CLASS_FOR_KIND = {kinds.CLASSIFICATION: TextClassifier, kinds.REGRESSION: TextRegressor,
                  kinds.MULTIPLE_CHOICE: MultipleChoice, kinds.TAGGING: TokenTagger,
                  kinds.SPAN: QuestionAnswerer}


def finetuned_model_for(task_model, spec: TaskSpec, tokenizer, seq_length: int,
                        lower_case: bool = True, lm_weight: float = 0.5, doc_stride: int = 128,
                        max_query_length: int = 64, max_answer_length: int = 30):
    """The binary's TaskModel as the API class of its task's kind, carrying its tokenizer and
    settings, so a saved model.keras is served, exported or reloaded with no tokenizer flags
    (as keras-hub tasks carry their preprocessor). None for a kind without an API class."""
    cls = CLASS_FOR_KIND.get(spec.kind)
    if cls is None:
        return None
    return cls(task_model, tokenizer, seq_length, task=spec.name, label_names=spec.label_names,
               pair=spec.is_pair, regression=spec.kind is kinds.REGRESSION,
               lower_case=lower_case, lm_weight=lm_weight, num_choices=spec.num_choices,
               doc_stride=doc_stride, max_query_length=max_query_length,
               max_answer_length=max_answer_length)


@dataclasses.dataclass(frozen=True)
class TextScores:
    """`LanguageModel.score`: per text, the log-probability of its predicted tokens (every
    token of its last seq_length but the first): their sum, their mean (nan when none is
    predicted) and how many there are."""

    total_log_prob: np.ndarray      # float64 [n]
    mean_log_prob: np.ndarray       # float64 [n]
    num_tokens: np.ndarray          # int64 [n]


class LanguageModel:
    """GPT-1 (or its LSTM baseline) as a language model from Python: `generate`, `score` and
    `perplexity` on raw text, and `export`, through the graph the export serves
    (finetune.export's LM head: the last seq_length tokens of a text).

        lm = LanguageModel.from_checkpoint("runs/gpt1")      # model_dir, .keras, HF openai-gpt
        lm.generate(["the film is"], max_new_tokens=12)                    # greedy -> [str]
        lm.generate(["the film is"], max_new_tokens=12, temperature=0.8, top_k=40, top_p=0.95,
                    seed=0, stop=["."])                                    # sampled
        lm.generate(["the film is"], max_new_tokens=12, num_beams=4)       # beam search
        lm.score(["a held-out sentence ."]).total_log_prob                 # -> [n]
        lm.perplexity(["a held-out sentence ."])                           # -> float
        lm.export("exports/gpt_lm")

    Training stays with `bert-gpt-pretrain` (pretraining.trainer): streams of records, not
    lists of strings.
    """

    def __init__(self, model, tokenizer, seq_length: int = 0, max_new_tokens_limit: int = 0):
        from finetune.export import build_serving_module
        self.model = model
        self.tokenizer = tokenizer
        self.seq_length = int(seq_length or model.config.max_positions)
        self.module = build_serving_module(model, None, tokenizer, self.seq_length,
                                           max_new_tokens_limit=max_new_tokens_limit)
        self.max_new_tokens_limit = self.module.head.spec.max_new_tokens_limit
        self._token_log_probs = tf.function(model.token_log_probs, reduce_retracing=True)

    @classmethod
    def from_checkpoint(cls, checkpoint: str, bpe_encoder_file: str = "",
                        bpe_merges_file: str = "", seq_length: int = 0,
                        max_new_tokens_limit: int = 0) -> "LanguageModel":
        """A pretraining model_dir (pretrained.keras), a .keras file, or a Hugging Face
        openai-gpt folder; the BPE files beside it unless given. max_new_tokens_limit: the most
        tokens one `generate` call (and the export's signature) may ask for (0: seq_length)."""
        from tfmodels.checkpoints.formats import bpe_files, load_checkpoint
        from tfmodels.gpt import GptLanguageModel
        from tfmodels.lstm import LstmLanguageModel
        model = load_checkpoint(checkpoint)
        if not isinstance(model, (GptLanguageModel, LstmLanguageModel)):
            raise ValueError(f"{checkpoint} holds a {type(model).__name__}, not a GPT-1 / LSTM "
                             "language model")
        files = bpe_files(checkpoint, bpe_encoder_file, bpe_merges_file)
        return cls(model, load_tokenizer("gpt", encoder_file=files["encoder_file"],
                                         merges_file=files["merges_file"]), seq_length,
                   max_new_tokens_limit)

    @classmethod
    def from_preset(cls, name: str = "openai_gpt", **options) -> "LanguageModel":
        """`from_checkpoint` on a released GPT-1 by name (tfmodels/presets.py)."""
        from tfmodels.presets import PRESET_PREFIX, get_preset
        return cls.from_checkpoint(PRESET_PREFIX + get_preset(name).name, **options)

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 20, top_k: int = 0,
                 seed: int = 0, *, temperature: float = 1.0, top_p: float = 1.0,
                 num_beams: int = 1, do_sample: bool = False,
                 stop: Sequence[str] = ()) -> List[str]:
        """The text generated after each prompt (`generate_outputs` has the ids and scores).

        Greedy by default. Sampling is on when do_sample is true or any of temperature (> 0,
        not 1), top_k (> 1: the k best tokens) or top_p (< 1: the nucleus) asks for it; they
        apply in that order, and the draw is stateless: the same seed gives the same text here
        and from the export. num_beams > 1 is beam search (deterministic, at most 16 beams,
        no sampling options). stop: strings that end a prompt's generation; the text is cut
        just before the first one. max_new_tokens is at most `max_new_tokens_limit`; a prompt
        needs at least one token; no prompts, no texts.
        """
        outputs = self.generate_outputs(prompts, max_new_tokens, top_k, seed,
                                        temperature=temperature, top_p=top_p,
                                        num_beams=num_beams, do_sample=do_sample, stop=stop)
        return [t.decode("utf-8", errors="replace") for t in outputs["text"]]

    def generate_outputs(self, prompts: Sequence[str], max_new_tokens: int = 20, top_k: int = 0,
                         seed: int = 0, *, temperature: float = 1.0, top_p: float = 1.0,
                         num_beams: int = 1, do_sample: bool = False,
                         stop: Sequence[str] = ()) -> Dict[str, np.ndarray]:
        """`generate`, returning the exported signature's outputs as numpy arrays: text [n]
        (bytes), token_ids [n, max_new_tokens] (-1 after a stop), num_tokens [n], log_prob [n]
        (the model's total log-probability of the generated tokens)."""
        from finetune.export.heads import MAX_NUM_BEAMS
        if isinstance(prompts, (str, bytes)):
            raise ValueError("pass a list of prompts, not one string")
        if isinstance(stop, (str, bytes)):
            raise ValueError("pass stop as a list of strings, not one string")
        prompts, stop = [text(p) for p in prompts], [text(s) for s in stop]
        if not 0 <= max_new_tokens <= self.max_new_tokens_limit:
            raise ValueError(f"max_new_tokens must be in 0..{self.max_new_tokens_limit} (the "
                             f"model's max_new_tokens_limit), got {max_new_tokens}")
        if not (temperature > 0 and math.isfinite(temperature)):
            raise ValueError(f"temperature must be > 0 (1: the model's distribution), got "
                             f"{temperature}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (1: off), got {top_p}")
        if top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0: off), got {top_k}")
        if not 1 <= num_beams <= MAX_NUM_BEAMS:
            raise ValueError(f"num_beams must be in 1..{MAX_NUM_BEAMS}, got {num_beams}")
        sampling = do_sample or top_k > 1 or top_p < 1 or temperature != 1
        if num_beams > 1 and sampling:
            raise ValueError("num_beams > 1 is beam search, which does not sample: leave "
                             "do_sample false, top_k <= 1, top_p 1 and temperature 1")
        if any(not s for s in stop):
            raise ValueError("a stop string is empty (it would stop before the first token)")
        tokens = self._encode(prompts)["input_mask"].numpy().sum(axis=1) if prompts else []
        if len(tokens) and not tokens.all():
            first = int(np.argmin(tokens))
            raise ValueError(f"prompt {first} ({prompts[first]!r}) has no tokens: the language "
                             "model needs at least one token to continue from")
        result = self.module.serving_signatures["generate"](
            text=tf.constant(prompts, tf.string),
            max_new_tokens=tf.constant(max_new_tokens, tf.int32),
            top_k=tf.constant(top_k, tf.int32), seed=tf.constant(seed, tf.int32),
            temperature=tf.constant(temperature, tf.float32),
            top_p=tf.constant(top_p, tf.float32), num_beams=tf.constant(num_beams, tf.int32),
            do_sample=tf.constant(bool(do_sample)), stop=tf.constant(stop, tf.string))
        return {k: v.numpy() for k, v in result.items()}

    def _encode(self, texts: Sequence[str]) -> Dict[str, tf.Tensor]:
        """The window of each text the serving graph reads (its last seq_length tokens)."""
        from tfmodels.preprocessing import sanitize_text
        inputs, _ = self.module.head.encode(self.module.packer,
                                            {"text": sanitize_text(tf.constant(texts))})
        return inputs

    def score(self, texts: Sequence[str], batch_size: int = 32) -> TextScores:
        """Each text's log-probability under the model (natural log), scored on its last
        seq_length tokens with the first of them unpredicted (the model has no start token)."""
        if isinstance(texts, (str, bytes)):
            raise ValueError("pass a list of texts, not one string")
        texts = [text(t) for t in texts]
        totals, counts = [], []
        for start in range(0, len(texts), batch_size):
            inputs = self._encode(texts[start:start + batch_size])
            log_probs = self._token_log_probs(inputs).numpy().astype(np.float64)
            mask = inputs["input_mask"].numpy()[:, 1:]
            totals.append((log_probs * mask).sum(axis=1))
            counts.append(mask.sum(axis=1).astype(np.int64))
        total = np.concatenate(totals) if totals else np.zeros([0])
        count = np.concatenate(counts) if counts else np.zeros([0], np.int64)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        return TextScores(total_log_prob=total, mean_log_prob=mean, num_tokens=count)

    def perplexity(self, texts: Sequence[str], batch_size: int = 32) -> float:
        """exp(mean negative log-likelihood per predicted token) over the texts: over `score`,
        exp(-sum(total_log_prob) / sum(num_tokens))."""
        scores = self.score(texts, batch_size)
        count = int(scores.num_tokens.sum())
        if not count:
            raise ValueError("no text has two tokens: nothing to score")
        return math.exp(-float(scores.total_log_prob.sum()) / count)

    def export(self, export_dir: str, precision: Optional[str] = None) -> str:
        """TF Serving layout `<export_dir>/<next version>/` (serving_default, generate).

        precision: "float32" or "bfloat16" (mixed_bfloat16 compute, finetune.export.publish);
        None: the model's own, so the export samples the same text as `generate` here for a
        seed (a bf16 model exported in float32 gets slightly other logits, and a sampled
        token can differ)."""
        from finetune.export import export_saved_model
        if precision is None:
            precision = ("bfloat16" if self.model.dtype_policy.compute_dtype == "bfloat16"
                         else "float32")
        base, name = os.path.split(os.path.normpath(export_dir))
        return export_saved_model(self.model, None, self.tokenizer, base or ".", name,
                                  self.seq_length, precision=precision,
                                  max_new_tokens_limit=self.max_new_tokens_limit)
