"""Fine-tuning from Python, in the Keras idiom: raw strings in, probabilities and task metrics out.

    from finetune import TextClassifier
    clf = TextClassifier.from_checkpoint(minilm_dir, num_classes=2, seq_length=64)
    clf.fit(train_texts, train_labels, epochs=1, batch_size=32)
    clf.predict(["a gripping, beautiful film"])        # probabilities [n, classes]
    clf.evaluate(dev_texts, dev_labels)               # {"accuracy": ...} (the task's metrics)
    clf.save("sst2.keras")                            # keras.saving.load_model gives it back
    clf.export("exports/sst2")                        # TF Serving layout, raw text in

A TextClassifier is a `keras.Model` holding the fine-tuning TaskModel (finetune.models) and the
model's tokenizer. Nothing here is a second implementation of the binaries' pieces:
- text -> rows: `finetune.features.encode_examples`, i.e. the in-graph `TextPacker` +
  `finetune.text_inputs.pack_texts` that the exports run on each request;
- training: Keras `fit` drives the project's `TrainStep` (AdamW with the papers' decay
  exclusions and warmup + linear decay, global-norm clipping of the all-reduced gradient,
  dense embedding gradients, optional XLA) on the length-bucketed batches of
  `finetune.batching`;
- prediction and evaluation: `finetune.evaluation.Predictor` (length-ordered batches) and the
  task's metric (`finetune.tasks`);
- export: `finetune.export.export_saved_model`.

Inputs: a list (or array) of strings; for pairs, a list of (text_a, text_b) tuples or a dict
{"text_a": [...], "text_b": [...]}; or a `tf.data.Dataset` of those (batched or not), optionally
yielding (texts, labels). Labels: class ids, label names, or floats (regression).
Create it inside `strategy.scope()` to train under a tf.distribute strategy.

Covered: single-text and pair classification, regression (STS-B), multiple choice, for BERT
and GPT-1 (GPT-1's aux LM and symmetric similarity as the binaries do); BERT tagging
(`TokenTagger`, CoNLL NER) and span QA (`QuestionAnswerer`, SQuAD, strided windows); the GPT-1
LM (`LanguageModel.generate`).
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from finetune import batching
from finetune.examples import ChoiceExample, SpanExample, TextExample, TokenExample
from finetune.features import encode_examples
from finetune.losses import task_loss
from finetune.models import (ARCHITECTURE_INPUT_FORMAT, ARCHITECTURES, as_backbone,
                             backbone_architecture, backbone_input_format, build_task_model)
from finetune.tasks import TaskSpec, get_task
from finetune import metrics as task_metrics
from tfmodels.optimization import create_optimizer
from tfmodels.progress import ProgressCallback
from tfmodels.tokenizers.loading import load_tokenizer
from tfmodels.training import TrainStep

Texts = Any  # list of str | list of (str, str) | {"text_a", "text_b"} | tf.data.Dataset


def _task_spec(task: str, num_classes: int, label_names: Sequence[str], pair: bool,
               regression: bool, num_choices: int = 0) -> TaskSpec:
    """A registered task (its labels, pair-ness, metric), or a custom one: accuracy (with F1 for
    two classes) for classes, Pearson / Spearman for regression, accuracy over choices."""
    if task:
        return get_task(task)
    if num_choices:
        return TaskSpec(name="multiple_choice", kind="multiple_choice", read=None,
                        metric=task_metrics.accuracy, main_metric="accuracy", files={},
                        num_choices=num_choices, is_pair=True)
    if regression:
        return TaskSpec(name="text_regressor", kind="regression", read=None,
                        metric=task_metrics.pearson_spearman, main_metric="corr", files={},
                        is_pair=pair)
    names = tuple(label_names) or tuple(str(i) for i in range(num_classes))
    if num_classes and len(names) != num_classes:
        raise ValueError(f"{len(names)} label_names for num_classes={num_classes}")
    if len(names) < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {len(names)}")
    metric = task_metrics.f1_and_accuracy if len(names) == 2 else task_metrics.accuracy
    return TaskSpec(name="text_classifier", kind="classification", read=None, metric=metric,
                    main_metric="accuracy", files={}, label_names=names, is_pair=pair)


def load_backbone_and_tokenizer(checkpoint: str, model: str = "bert", vocab_file: str = "",
                                bpe_encoder_file: str = "", bpe_merges_file: str = "",
                                lower_case: bool = True):
    """The backbone a checkpoint holds (any format fine-tuning reads) and its tokenizer (the
    vocabulary beside it unless given), checked against each other."""
    from tfmodels.checkpoints.formats import bpe_files, load_checkpoint, wordpiece_vocab_file
    if model not in ARCHITECTURES:
        raise ValueError(f"model must be one of {', '.join(ARCHITECTURES)}, got {model!r}")
    backbone = as_backbone(load_checkpoint(checkpoint))
    if backbone_architecture(backbone) != model:
        raise ValueError(f"{checkpoint} holds a {type(backbone).__name__}, not a {model} model")
    if ARCHITECTURE_INPUT_FORMAT[model] == "bert":
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


# ---- inputs ------------------------------------------------------------------------------------

def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        value = value.item()
        return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a text (str), got {type(value).__name__}: {value!r}")
    return value


def _rows(value) -> List[Any]:
    """One dataset element's field -> a list of rows (unbatched elements give one row)."""
    array = np.asarray(value, dtype=object) if not isinstance(value, np.ndarray) else value
    return [array.item()] if array.ndim == 0 else list(array)


def _from_dataset(dataset: tf.data.Dataset) -> Tuple[Any, Optional[List[Any]]]:
    """A dataset of texts, pairs or dicts of columns (batched or not), optionally as
    (inputs, labels) -> Python columns and labels."""
    texts_a, texts_b, columns, labels = [], [], {}, []
    for element in dataset.as_numpy_iterator():
        x, y = element if isinstance(element, tuple) and len(element) == 2 and not (
            isinstance(element[0], (bytes, str, np.bytes_))
            and isinstance(element[1], (bytes, str, np.bytes_))) else (element, None)
        if isinstance(x, dict):
            # One example per element unless its first column has a batch axis.
            first = next(v for k, v in x.items() if k != "endings")
            batched = np.ndim(first) > 0
            for key, value in x.items():
                columns.setdefault(key, []).extend(list(value) if batched else [value])
        elif isinstance(x, tuple):
            texts_a += _rows(x[0])
            texts_b += _rows(x[1])
        else:
            texts_a += _rows(x)
        if y is not None:
            labels += _rows(y)
    x = columns or ({"text_a": texts_a, "text_b": texts_b} if texts_b else texts_a)
    return x, (labels or None)


def _columns(x: Texts, pair: bool) -> Tuple[List[str], Optional[List[str]]]:
    if isinstance(x, dict):
        a, b = list(x["text_a"]), list(x["text_b"])
    elif pair:
        items = list(x)
        bad = [i for i, item in enumerate(items) if not (isinstance(item, (tuple, list))
                                                         and len(item) == 2)]
        if bad:
            raise ValueError(f"a pair classifier takes (text_a, text_b) pairs; item {bad[0]} is "
                             f"{items[bad[0]]!r}")
        a, b = [i[0] for i in items], [i[1] for i in items]
    else:
        if isinstance(x, str):
            raise ValueError("pass a list of texts, not one string")
        a, b = list(x), None
    if pair != (b is not None):
        raise ValueError("this classifier reads text pairs; pass (text_a, text_b) tuples"
                         if pair else "this classifier reads single texts, got pairs")
    if b is not None and len(a) != len(b):
        raise ValueError(f"{len(a)} first texts but {len(b)} second texts")
    return [_text(t) for t in a], (None if b is None else [_text(t) for t in b])


class TextClassifier(keras.Model):
    """BERT or GPT-1 fine-tuned to classify (or score) a text or a text pair; see the module
    docstring. Build it with `from_checkpoint`; `keras.saving.load_model` restores a saved one.

    call(model inputs) -> logits [b, classes] (regression: scores [b]); `predict`, `evaluate`,
    `fit` take raw texts.
    """

    def __init__(self, task_model, tokenizer=None, seq_length: int = 128, task: str = "",
                 label_names: Sequence[str] = (), pair: bool = False, regression: bool = False,
                 lower_case: bool = True, lm_weight: float = 0.5, num_choices: int = 0,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_choices = int(num_choices)
        self.task_model = task_model
        self.tokenizer = tokenizer
        self.seq_length = int(seq_length)
        self.task = task
        self.label_names = tuple(label_names)
        self.pair = bool(pair)
        self.regression = bool(regression)
        self.lower_case = bool(lower_case)
        self.lm_weight = float(lm_weight)
        self.input_format = backbone_input_format(task_model)
        self.task_spec = _task_spec(task, len(self.label_names), self.label_names, pair,
                                    regression, self.num_choices)
        self.output_key = "predictions" if self.task_spec.kind == "regression" else "logits"
        # The task model carries its own weights; this wrapper adds none.
        self.built = bool(task_model.built)

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
        """
        spec = _task_spec(task, 0 if label_names else num_classes,
                          label_names or tuple(str(i) for i in range(num_classes)), pair,
                          regression)
        backbone, tokenizer = load_backbone_and_tokenizer(
            checkpoint, model, vocab_file, bpe_encoder_file, bpe_merges_file, lower_case)
        if not 1 <= seq_length <= backbone.config.max_positions:
            raise ValueError(f"seq_length must be in 1..{backbone.config.max_positions}, got "
                             f"{seq_length}")
        keras.utils.set_random_seed(seed)
        options = {"dropout": dropout, "name": spec.name}
        if backbone_input_format(backbone) == "gpt":
            options["aux_lm"] = lm_weight > 0
        task_model = build_task_model(spec, backbone, **options)
        return cls(task_model, tokenizer, seq_length, task=task,
                   label_names=spec.label_names, pair=spec.is_pair,
                   regression=spec.kind == "regression", lower_case=lower_case,
                   lm_weight=lm_weight)

    # ---- Keras ---------------------------------------------------------------------------------

    def call(self, inputs, training=None):
        return self.task_model(inputs, training=training)[self.output_key]

    def get_config(self):
        return {**super().get_config(),
                "task_model": keras.saving.serialize_keras_object(self.task_model),
                "seq_length": self.seq_length, "task": self.task,
                "label_names": list(self.label_names), "pair": self.pair,
                "regression": self.regression, "lower_case": self.lower_case,
                "lm_weight": self.lm_weight, "num_choices": self.num_choices}

    @classmethod
    def from_config(cls, config):
        from finetune import models  # noqa: F401  (registers the task models)
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

    def train_step(self, data):
        # Keras' fit loop (callbacks, History, epochs) around the project's step, run in the
        # replica context Keras' distributed train function provides.
        return self._train_step.replica_step(data)

    # ---- raw text in ---------------------------------------------------------------------------

    def encode(self, x: Texts, y: Optional[Sequence[Any]] = None):
        """Inputs (and labels) -> (examples, EncodedFeatures) through the shared in-graph
        packer (finetune.features)."""
        if isinstance(x, tf.data.Dataset):
            x, dataset_labels = _from_dataset(x)
            y = dataset_labels if y is None else y
        if y is not None:
            y = list(_rows(y) if isinstance(y, (np.ndarray, tf.Tensor)) else y)
        examples = self._examples(x, y)
        if not examples:
            raise ValueError("no texts")
        return examples, encode_examples(examples, self.task_spec.kind, self.input_format,
                                         self.tokenizer, self.seq_length,
                                         label_names=self.label_names, **self._encode_options())

    def _examples(self, x, y) -> List[TextExample]:
        a, b = _columns(x, self.pair)
        if y is not None:
            if len(y) != len(a):
                raise ValueError(f"{len(a)} texts but {len(y)} labels")
            y = [self._label_name(v) for v in y]
        return [TextExample(str(i), t, None if b is None else b[i], None if y is None else y[i])
                for i, t in enumerate(a)]

    def _encode_options(self) -> Dict[str, Any]:
        if self.input_format != "gpt":
            return {}
        return {"symmetric": bool(getattr(self.task_model, "symmetric", False))}

    def _label_name(self, value):
        if isinstance(value, np.generic):
            value = value.item()
        if self.task_spec.kind == "regression":
            return float(value)
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        if isinstance(value, str):
            if value not in self.label_names:
                raise ValueError(f"label {value!r} is not one of {list(self.label_names)}")
            return value
        index = int(value)
        if not 0 <= index < len(self.label_names) or index != value:
            raise ValueError(f"label {value!r} is not a class id in 0..{len(self.label_names) - 1}")
        return self.label_names[index]

    def fit(self, x: Texts = None, y: Optional[Sequence[Any]] = None, epochs: float = 1,
            batch_size: int = 32, learning_rate: float = 5e-5, warmup_fraction: float = -1.0,
            weight_decay: float = 0.01, clip_norm: float = 1.0, jit_compile: bool = False,
            pad_to_max_length: bool = False, seed: int = 0, verbose: int = 1,
            callbacks: Sequence[keras.callbacks.Callback] = ()):
        """Fine-tunes on raw texts and labels; returns Keras' History (loss, accuracy per epoch).

        epochs may be fractional; the schedule (warmup_fraction: BERT 0.1, GPT-1 0.002 when
        < 0, then linear decay) spans this call. verbose 1: a progress line on stderr.
        """
        from finetune.config import WARMUP_FRACTION
        _, features = self.encode(x, y)
        if not features.label_keys:
            raise ValueError("fit needs labels (y, or (texts, labels) from the dataset)")
        strategy = self.distribute_strategy
        steps_per_epoch = len(features) // batch_size
        if steps_per_epoch < 1:
            raise ValueError(f"{len(features)} examples are fewer than one batch of {batch_size}")
        total = max(1, int(round(epochs * steps_per_epoch)))
        if warmup_fraction < 0:
            warmup_fraction = WARMUP_FRACTION[self.input_format]
        with strategy.scope():
            optimizer = create_optimizer(learning_rate, total_steps=total,
                                         warmup_steps=int(round(warmup_fraction * total)),
                                         weight_decay=weight_decay)
        self._train_step = TrainStep(self.task_model, optimizer,
                                     task_loss(self.task_spec, self.input_format, self.lm_weight),
                                     strategy, jit_compile=jit_compile, clip_norm=clip_norm)
        # Keras checks that the model is compiled; the optimizer lives in TrainStep (it clips
        # the all-reduced gradient, which a Keras optimizer cannot under a strategy).
        self.compile(optimizer=optimizer, jit_compile=False)
        dataset = batching.train_dataset({**features.inputs(), **features.labels()},
                                         batch_size, seed, pad_to_max_length)
        epochs_run = max(1, math.ceil(total / steps_per_epoch))
        shown = [ProgressCallback(total, "fit")] if verbose else []
        try:
            return super().fit(dataset, epochs=epochs_run,
                               steps_per_epoch=min(steps_per_epoch, total), verbose=0,
                               shuffle=False, callbacks=[*shown, *callbacks])
        finally:
            # The schedule belongs to this call; a saved model carries no optimizer state.
            self.optimizer = None
            self.compiled = False

    def _predict_features(self, features, batch_size: int) -> np.ndarray:
        """Probabilities [n, classes] (regression: scores [n]) of encoded features, in order."""
        from finetune.evaluation import Predictor
        outputs = Predictor(self.task_model, self.distribute_strategy, (self.output_key,),
                            batch_size)(features)[self.output_key]
        if self.task_spec.kind == "regression":
            return outputs.astype(np.float32)
        z = np.exp(outputs - outputs.max(-1, keepdims=True))
        return (z / z.sum(-1, keepdims=True)).astype(np.float32)

    def predict(self, x: Texts, batch_size: int = 64, **unused) -> np.ndarray:
        """Class probabilities [n, classes] (regression: scores [n])."""
        return self._predict_features(self.encode(x)[1], batch_size)

    def predict_labels(self, x: Texts, batch_size: int = 64) -> List[str]:
        """The most probable label name of every text."""
        return [self.label_names[i] for i in self.predict(x, batch_size).argmax(-1)]

    def evaluate(self, x: Texts = None, y: Optional[Sequence[Any]] = None, batch_size: int = 64,
                 **unused) -> Dict[str, float]:
        """The task's metrics (accuracy, F1, MCC, Pearson / Spearman ...) on texts and labels."""
        examples, features = self.encode(x, y)
        if not features.label_keys:
            raise ValueError("evaluate needs labels (y, or (texts, labels) from the dataset)")
        predictions = self._predict_features(features, batch_size)
        from finetune.evaluation import DECODERS
        gold = [DECODERS[self.task_spec.kind].gold(e, self.task_spec) for e in examples]
        predicted = (predictions.tolist() if self.task_spec.kind == "regression"
                     else predictions.argmax(-1).tolist())
        return {k: float(v) for k, v in self.task_spec.metric(gold, predicted).items()}

    def export(self, export_dir: str, seq_length: Optional[int] = None,
               ids_only: bool = False) -> str:
        """TF Serving layout `<export_dir>/<next version>/` (raw text in: the same packer);
        returns the version folder."""
        base, name = os.path.split(os.path.normpath(export_dir))
        from finetune.export import export_saved_model
        return export_saved_model(self.task_model, self.task_spec, self.tokenizer, base or ".",
                                  name, seq_length or self.seq_length, ids_only=ids_only,
                                  **self._export_options())

    def _export_options(self) -> Dict[str, Any]:
        """Task-specific export_saved_model arguments (SQuAD's query / answer lengths)."""
        return {}


keras.saving.register_keras_serializable(package="finetune")(TextClassifier)


class TextRegressor(TextClassifier):
    """A TextClassifier that predicts one score per text or pair (STS-B): `predict` gives the
    scores, `evaluate` Pearson / Spearman."""

    @classmethod
    def from_checkpoint(cls, checkpoint: str, seq_length: int = 128, task: str = "",
                        pair: bool = True, **options) -> "TextRegressor":
        if task and get_task(task).kind != "regression":
            raise ValueError(f"task {task!r} is not a regression task")
        return super().from_checkpoint(checkpoint, num_classes=1, seq_length=seq_length,
                                       task=task, pair=pair, regression=True, **options)


keras.saving.register_keras_serializable(package="finetune")(TextRegressor)


class MultipleChoice(TextClassifier):
    """Picks one of `num_choices` endings (SWAG, RACE, Story Cloze): one row per candidate (BERT
    `[CLS] context [SEP] question ending [SEP]`, GPT-1 `[s] context question [$] ending [e]`),
    one score each, softmax over the candidates.

        mc = MultipleChoice.from_checkpoint(minilm_dir, num_choices=2, seq_length=128)
        mc.fit([(context, question, (ending_0, ending_1)), ...], [1, ...])
        mc.predict({"context": [...], "question": [...], "endings": [[e0, e1], ...]})  # [n, 2]

    question may be "" (Story Cloze). Labels: the index of the right ending.
    """

    @classmethod
    def from_checkpoint(cls, checkpoint: str, num_choices: int = 4, seq_length: int = 128,
                        task: str = "", model: str = "bert", vocab_file: str = "",
                        bpe_encoder_file: str = "", bpe_merges_file: str = "",
                        lower_case: bool = True, dropout: float = 0.1, lm_weight: float = 0.5,
                        seed: int = 0) -> "MultipleChoice":
        if task and get_task(task).kind != "multiple_choice":
            raise ValueError(f"task {task!r} is not a multiple-choice task")
        spec = _task_spec(task, 0, (), True, False, num_choices)
        backbone, tokenizer = load_backbone_and_tokenizer(
            checkpoint, model, vocab_file, bpe_encoder_file, bpe_merges_file, lower_case)
        keras.utils.set_random_seed(seed)
        options = {"dropout": dropout, "name": spec.name}
        if backbone_input_format(backbone) == "gpt":
            options["aux_lm"] = lm_weight > 0
        return cls(build_task_model(spec, backbone, **options), tokenizer, seq_length, task=task,
                   pair=True, lower_case=lower_case, lm_weight=lm_weight,
                   num_choices=spec.num_choices)

    def _examples(self, x, y) -> List[ChoiceExample]:
        if isinstance(x, dict):
            rows = list(zip(x["context"], x.get("question") or [""] * len(x["context"]),
                            x["endings"]))
        else:
            rows = list(x)
        if y is not None and len(y) != len(rows):
            raise ValueError(f"{len(rows)} questions but {len(y)} labels")
        examples = []
        for i, row in enumerate(rows):
            if not (isinstance(row, (tuple, list)) and len(row) == 3):
                raise ValueError(f"item {i}: expected (context, question, endings), got {row!r}")
            context, question, endings = row
            endings = tuple(_text(e) for e in endings)
            if len(endings) != self.num_choices:
                raise ValueError(f"item {i} has {len(endings)} endings, expected "
                                 f"{self.num_choices}")
            label = None
            if y is not None:
                label = int(np.asarray(y[i]).item())
                if not 0 <= label < self.num_choices:
                    raise ValueError(f"label {label} is not an ending index in "
                                     f"0..{self.num_choices - 1}")
            examples.append(ChoiceExample(str(i), _text(context), _text(question), endings,
                                          label))
        return examples

    def _encode_options(self) -> Dict[str, Any]:
        return {}

    def predict_labels(self, x, batch_size: int = 64) -> List[int]:
        """The index of the most probable ending of every question."""
        return self.predict(x, batch_size).argmax(-1).tolist()


keras.saving.register_keras_serializable(package="finetune")(MultipleChoice)


class _DecodedHead(TextClassifier):
    """Heads whose predictions are decoded per example from per-position logits (tags, spans):
    `predict` returns the decoded predictions, `evaluate` the task metric on them."""

    _options: Tuple[str, ...] = ()

    def __init__(self, task_model, tokenizer=None, seq_length: int = 128, **kwargs):
        options = {k: kwargs.pop(k) for k in self._options if k in kwargs}
        super().__init__(task_model, tokenizer, seq_length, **kwargs)
        for key, value in options.items():
            setattr(self, key, value)

    def get_config(self):
        return {**super().get_config(), **{k: getattr(self, k) for k in self._options}}

    def call(self, inputs, training=None):
        return self.task_model(inputs, training=training)

    def _decode(self, examples, features, batch_size: int):
        from finetune.data import Split
        from finetune.evaluation import DECODERS
        kind = DECODERS[self.task_spec.kind]
        settings = self._settings(batch_size)
        outputs = kind.predictor(self.task_model, self.distribute_strategy, settings)(features)
        return kind.decode(outputs, Split(examples, features), settings)

    def _settings(self, batch_size: int) -> "_Settings":
        return _Settings(batch_size, **{k: getattr(self, k) for k in self._options})

    def predict(self, x, batch_size: int = 64, **unused) -> List[Any]:
        """Decoded predictions: tags per word, or answer texts (v2.0: "" when the null score
        beats the threshold)."""
        from finetune.evaluation import final_answers
        examples, features = self.encode(x)
        decoded = self._decode(examples, features, batch_size)
        return final_answers(self.task_spec, decoded, self._settings(batch_size).null_threshold)

    def evaluate(self, x=None, y=None, batch_size: int = 64, **unused) -> Dict[str, float]:
        """The task's metrics, as the fine-tuning binary scores them (finetune.evaluation.score)."""
        from finetune.evaluation import score
        examples, features = self.encode(x, y)
        if not features.label_keys:
            raise ValueError("evaluate needs gold labels (y)")
        decoded = self._decode(examples, features, batch_size)
        return {k: float(v) for k, v in score(self.task_spec, examples, decoded,
                                               self._settings(batch_size)).items()}

    def predict_labels(self, x, batch_size: int = 64) -> List[Any]:
        return self.predict(x, batch_size)


class _Settings:
    """The FinetuneConfig fields the trainer's decoders and predictor read, at FinetuneConfig's
    defaults (FinetuneConfig itself needs a task, data and an output folder)."""

    _FIELDS = ("pad_to_max_length", "n_best_size", "max_answer_length", "null_threshold",
               "tune_null_threshold")

    def __init__(self, batch_size: int, **values):
        from finetune.config import FinetuneConfig
        defaults = {f.name: f.default for f in dataclasses.fields(FinetuneConfig)}
        self.__dict__.update({k: defaults[k] for k in self._FIELDS})
        self.eval_batch_size = batch_size
        self.__dict__.update(values)


def _tagger_spec(task: str, tags: Sequence[str]) -> TaskSpec:
    if task:
        spec = get_task(task)
        if spec.kind != "token_classification":
            raise ValueError(f"task {task!r} is not a tagging task")
        return spec
    if len(tags) < 2:
        raise ValueError(f"a tagger needs at least 2 tags, got {list(tags)}")
    return TaskSpec(name="token_tagger", kind="token_classification", read=None,
                    metric=task_metrics.ner_f1, main_metric="f1", files={},
                    label_names=tuple(tags))


class TokenTagger(_DecodedHead):
    """One tag per word (CoNLL-2003 NER; BERT): the tag is read at each word's first piece.

        tagger = TokenTagger.from_checkpoint(minilm_dir, task="conll2003", seq_length=128)
        tagger.fit([["EU", "rejects", "German", "call"], ...], [["B-ORG", "O", "B-MISC", "O"]])
        tagger.predict(["Peter Blackburn visits Brussels"])  # [["B-PER", "I-PER", "O", "B-LOC"]]

    Sentences are lists of words or strings (split on whitespace); `evaluate` gives entity F1.
    """

    @classmethod
    def from_checkpoint(cls, checkpoint: str, tags: Sequence[str] = (), seq_length: int = 128,
                        task: str = "", vocab_file: str = "", lower_case: bool = True,
                        dropout: float = 0.1, seed: int = 0) -> "TokenTagger":
        spec = _tagger_spec(task, tags)
        backbone, tokenizer = load_backbone_and_tokenizer(checkpoint, "bert", vocab_file,
                                                          lower_case=lower_case)
        keras.utils.set_random_seed(seed)
        task_model = build_task_model(spec, backbone, dropout=dropout, name=spec.name)
        return cls(task_model, tokenizer, seq_length, task=task, label_names=spec.label_names,
                   lower_case=lower_case)

    def __init__(self, task_model, tokenizer=None, seq_length: int = 128, **kwargs):
        kwargs.setdefault("task", "")
        super().__init__(task_model, tokenizer, seq_length, **kwargs)
        self.task_spec = _tagger_spec(self.task, self.label_names)
        self.output_key = "logits"

    def _examples(self, x, y) -> List[TokenExample]:
        sentences = [_text(s).split() if isinstance(s, (str, bytes)) else [_text(w) for w in s]
                     for s in x]
        if y is not None and len(y) != len(sentences):
            raise ValueError(f"{len(sentences)} sentences but {len(y)} tag lists")
        return [TokenExample(str(i), tuple(words),
                             None if y is None else tuple(_text(t) for t in y[i]))
                for i, words in enumerate(sentences)]

    def _encode_options(self) -> Dict[str, Any]:
        return {}


class QuestionAnswerer(_DecodedHead):
    """Extractive QA (SQuAD v1.1 / v2.0; BERT): the answer is a span of the context, read from
    start / end logits over every doc_stride window of a long context.

        qa = QuestionAnswerer.from_checkpoint(minilm_dir, seq_length=256)
        qa.fit([(question, context), ...], [(answer_text, answer_char_start), ...])
        qa.predict([("Who wrote it?", "It was written by Ann in 1990.")])   # ["Ann"]

    Gold answers are (text, character offset) pairs, or for evaluation any answer texts;
    `evaluate` gives exact match and F1 with the official normalisation.
    """

    _options = ("doc_stride", "max_query_length", "max_answer_length")

    @classmethod
    def from_checkpoint(cls, checkpoint: str, seq_length: int = 384, doc_stride: int = 128,
                        max_query_length: int = 64, max_answer_length: int = 30,
                        version_2: bool = False, vocab_file: str = "", lower_case: bool = True,
                        seed: int = 0) -> "QuestionAnswerer":
        task = "squad_v2" if version_2 else "squad_v1"
        backbone, tokenizer = load_backbone_and_tokenizer(checkpoint, "bert", vocab_file,
                                                          lower_case=lower_case)
        keras.utils.set_random_seed(seed)
        # run_squad.py: no dropout before the span layer.
        task_model = build_task_model(get_task(task), backbone, name=task)
        return cls(task_model, tokenizer, seq_length, task=task, pair=True,
                   lower_case=lower_case, doc_stride=doc_stride,
                   max_query_length=max_query_length, max_answer_length=max_answer_length)

    def _examples(self, x, y) -> List[SpanExample]:
        if isinstance(x, dict):
            rows = list(zip(x["question"], x["context"]))
        else:
            rows = [tuple(r) for r in x]
        if y is not None and len(y) != len(rows):
            raise ValueError(f"{len(rows)} questions but {len(y)} answers")
        examples = []
        for i, row in enumerate(rows):
            if len(row) != 2:
                raise ValueError(f"item {i}: expected (question, context), got {row!r}")
            question, context = (_text(v) for v in row)
            answers: Tuple[Tuple[str, int], ...] = ()
            if y is not None:
                gold = y[i]
                if isinstance(gold, (str, bytes)):
                    gold = [(_text(gold), context.find(_text(gold)))]
                elif len(gold) == 2 and isinstance(gold[1], (int, np.integer)):
                    gold = [gold]
                answers = tuple((_text(t), int(start)) for t, start in gold)
            examples.append(SpanExample(str(i), question, context, answers))
        return examples

    def _encode_options(self) -> Dict[str, Any]:
        return {"doc_stride": self.doc_stride, "max_query_length": self.max_query_length}

    def _export_options(self) -> Dict[str, Any]:
        return {"max_query_length": self.max_query_length,
                "max_answer_length": self.max_answer_length}


for _cls in (TokenTagger, QuestionAnswerer):
    keras.saving.register_keras_serializable(package="finetune")(_cls)


class LanguageModel:
    """GPT-1 (or its LSTM baseline) as a language model from Python: `generate` and `perplexity`
    on raw text, and `export`, through the graph the export serves (finetune.export's LM head:
    the last seq_length tokens of a text, greedy or top-k sampling).

        lm = LanguageModel.from_checkpoint("runs/gpt1")      # model_dir, .keras, HF openai-gpt
        lm.generate(["the film is"], max_new_tokens=12, top_k=20, seed=0)   # -> [str]
        lm.perplexity(["a held-out sentence ."])                            # -> float
        lm.export("exports/gpt_lm")

    Training stays with `bert-gpt-pretrain` (pretraining.trainer): streams of records, not
    lists of strings.
    """

    def __init__(self, model, tokenizer, seq_length: int = 0):
        from finetune.export import build_serving_module
        self.model = model
        self.tokenizer = tokenizer
        self.seq_length = int(seq_length or model.config.max_positions)
        self.module = build_serving_module(model, None, tokenizer, self.seq_length)

    @classmethod
    def from_checkpoint(cls, checkpoint: str, bpe_encoder_file: str = "",
                        bpe_merges_file: str = "", seq_length: int = 0) -> "LanguageModel":
        """A pretraining model_dir (pretrained.keras), a .keras file, or a Hugging Face
        openai-gpt folder; the BPE files beside it unless given."""
        from tfmodels.checkpoints.formats import bpe_files, load_checkpoint
        from tfmodels.gpt import GptLanguageModel
        from tfmodels.lstm import LstmLanguageModel
        model = load_checkpoint(checkpoint)
        if not isinstance(model, (GptLanguageModel, LstmLanguageModel)):
            raise ValueError(f"{checkpoint} holds a {type(model).__name__}, not a GPT-1 / LSTM "
                             "language model")
        files = bpe_files(checkpoint, bpe_encoder_file, bpe_merges_file)
        return cls(model, load_tokenizer("gpt", encoder_file=files["encoder_file"],
                                         merges_file=files["merges_file"]), seq_length)

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 20, top_k: int = 0,
                 seed: int = 0) -> List[str]:
        """The text generated after each prompt: greedy (top_k <= 1) or sampled from the top k
        tokens (a stateless sample: the same seed gives the same text)."""
        prompts = [_text(p) for p in prompts]
        result = self.module.serving_signatures["generate"](
            text=tf.constant(prompts), max_new_tokens=tf.constant(max_new_tokens, tf.int32),
            top_k=tf.constant(top_k, tf.int32), seed=tf.constant(seed, tf.int32))
        return [t.decode("utf-8", errors="replace") for t in result["text"].numpy()]

    def perplexity(self, texts: Sequence[str], batch_size: int = 32) -> float:
        """exp(mean negative log-likelihood per predicted token) over the texts (each scored on
        its last seq_length tokens, the first token of each unpredicted)."""
        total, count = 0.0, 0
        for start in range(0, len(texts), batch_size):
            chunk = tf.constant([_text(t) for t in texts[start:start + batch_size]])
            inputs, _ = self.module.head.encode(self.module.packer, {"text": chunk})
            logits = self.model(inputs, training=False)["logits"]
            log_probs = tf.nn.log_softmax(tf.cast(logits[:, :-1], tf.float32), axis=-1)
            targets = inputs["input_ids"][:, 1:]
            mask = tf.cast(inputs["input_mask"][:, 1:], tf.float32)
            picked = tf.gather(log_probs, targets, batch_dims=2)
            total -= float(tf.reduce_sum(picked * mask))
            count += int(tf.reduce_sum(mask))
        if not count:
            raise ValueError("no text has two tokens: nothing to score")
        return math.exp(total / count)

    def export(self, export_dir: str) -> str:
        """TF Serving layout `<export_dir>/<next version>/` (serving_default, generate)."""
        from finetune.export import export_saved_model
        base, name = os.path.split(os.path.normpath(export_dir))
        return export_saved_model(self.model, None, self.tokenizer, base or ".", name,
                                  self.seq_length)
