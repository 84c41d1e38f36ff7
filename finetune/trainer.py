"""The fine-tuning loop for every task of both papers: one loop, a learning-rate x seed sweep,
model selection on dev, and the files a run leaves behind.

`run_finetune(config)` is what the absl binary `finetune/run_finetune.py` calls and what tests
call directly:

    read (finetune.tasks) -> encode (finetune.features) -> tf.data -> model from the checkpoint
    (finetune.models) -> freezing policy / layer transfer (finetune.freezing) -> AdamW, warmup +
    linear decay (tfmodels.optimization) -> TrainStep (tfmodels.training) -> predict on the
    dev / held-out set -> decode + task metric

once per (learning rate, seed). BERT sweeps {5e-5, 4e-5, 3e-5, 2e-5} and keeps the learning
rate with the best MEAN dev score over seeds (Section 4.1 picks on dev; the mean makes the
choice robust to one lucky seed); GPT-1 uses 6.25e-5. Task kinds differ only in a small
decode function each (`DECODERS`): argmax classes, a regression scalar, SQuAD spans
(`predict_answers` + official EM/F1, the v2.0 null threshold tuned on dev), NER word tags
(first sub-token + entity F1), multiple-choice argmax.

Evaluation data: the task's dev file when `data_dir` holds one, else the held-back LAST
`holdout_fraction` of the (capped) training examples — the shared data ships no dev sets.
Evaluation never drops examples: the last batch is padded with copies of the final row and
the padded rows' outputs are discarded.

Output (`output_dir`):
  results.json                 every run, per-lr mean/std, the chosen lr, seconds per step
  model.keras                  the selected run's fine-tuned TaskModel (keras.saving.load_model)
  predictions/eval/<file>      the selected run's dev / held-out predictions
  predictions/test/<file>      and test predictions when `data_dir` has the test file
<file> is the GLUE leaderboard TSV (SST-2.tsv, ...) for GLUE tasks, predictions.json (+ null
odds for v2.0) for SQuAD, predictions.jsonl for the rest. Every file is written atomically.

Checkpoints (`init_checkpoint`, detected from the files present, see
`detect_checkpoint_format`): a Hugging Face BERT folder, a google-research/bert TF1 folder, an
OpenAI GPT-1 `.npy` release, a Hugging Face openai-gpt folder, a `.keras` file from our
pretraining (or any saved model holding a backbone, e.g. a fine-tuned one), or a pretraining
`model_dir` holding `pretrained.keras`. Empty: random init from `model_config` (the papers'
"no pretraining" ablation).

`model=lstm` is GPT-1's LSTM baseline (Section 5, tfmodels.lstm): a `.keras` file or model_dir
from `pretraining.run_pretraining --model=lstm`, or random init from an lstm_* config; it is
fine-tuned exactly like GPT-1 (`input_format` "gpt": BPE files, input transforms, classify
position, aux LM with `lm_weight`, GPT-1's learning rate and warmup), and every strategy
applies to its LSTM layers.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from finetune import batching
from finetune import predictions as prediction_files
from finetune import freezing
from finetune.features import EncodedFeatures, decode_word_predictions, encode_examples
from finetune.features import predict_answers
from finetune.models import GPT_SIMILARITY_TASKS, INPUT_FORMATS, as_backbone
from finetune.models import backbone_architecture
from finetune.models import LOSSES, build_task_model, task_loss
from finetune.readers.common import holdout_split
from finetune.readers.tfds import TFDS_TASKS
from finetune.tasks import TaskSpec, get_task
from tfmodels import configs, precision
from tfmodels.bert import BertEncoder
from tfmodels.checkpoints.formats import (FORMAT_ARCHITECTURE, bpe_files,
                                         detect_checkpoint_format, load_checkpoint,
                                         wordpiece_vocab_file)
from tfmodels.config_flags import AutoBool
from tfmodels.gpt import GptDecoder
from tfmodels.lstm import LstmDecoder
from tfmodels.optimization import create_optimizer
from tfmodels.progress import Progress
from tfmodels.tokenizers.loading import load_tokenizer
from tfmodels import training
from tfmodels.training import TrainStep

BERT_LEARNING_RATES = (5e-5, 4e-5, 3e-5, 2e-5)   # BERT Section 4.1 / Appendix A.3
GPT_LEARNING_RATES = (6.25e-5,)                  # GPT-1 Section 4.1
WARMUP_FRACTION = {"bert": 0.1, "gpt": 0.002}    # BERT's 10%; GPT-1's 0.2%
MODELS = tuple(INPUT_FORMATS)  # bert, gpt, lstm (GPT-1's LSTM baseline)
# Each model's backbone class, config class and default random-init config.
_BACKBONES = {"bert": (BertEncoder, configs.BertConfig, "bert_base"),
              "gpt": (GptDecoder, configs.GptConfig, "gpt1"),
              "lstm": (LstmDecoder, configs.LstmConfig, "lstm_2048")}
_BERT_ONLY_KINDS = ("span", "token_classification")
DATA_SOURCES = ("files", "tfds")


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    # What to fine-tune.
    task: str = dataclasses.field(default="", metadata={"help": "Task name (finetune.tasks)."})
    model: str = dataclasses.field(
        default="bert", metadata={"help": "bert | gpt | lstm (GPT-1's LSTM baseline, fine-tuned "
                                          "like GPT-1: BPE, input transforms, aux LM)"})
    init_checkpoint: str = dataclasses.field(
        default="", metadata={"help": "HF BERT folder, TF1 BERT folder, OpenAI GPT .npy folder, "
                                      "HF openai-gpt folder, a .keras file or a pretraining "
                                      "model_dir (detected from the files); empty: random init."})
    model_config: str = dataclasses.field(
        default="", metadata={"help": "Named config for random init ('' = bert_base / gpt1 / "
                                      "lstm_2048)."})
    vocab_size: int = dataclasses.field(
        default=0, metadata={"help": "Random init: vocabulary size (0 = the tokenizer's)."})
    num_heads: int = dataclasses.field(
        default=12, metadata={"help": "Heads of an OpenAI .npy release (not in its files)."})
    vocab_file: str = dataclasses.field(
        default="", metadata={"help": "BERT WordPiece vocab ('' = vocab.txt beside the "
                                      "checkpoint)."})
    lower_case: bool = dataclasses.field(default=True, metadata={"help": "Uncased WordPiece."})
    bpe_encoder_file: str = dataclasses.field(
        default="", metadata={"help": "GPT-1 BPE encoder JSON ('' = beside the checkpoint)."})
    bpe_merges_file: str = dataclasses.field(
        default="", metadata={"help": "GPT-1 BPE merges ('' = beside the checkpoint)."})
    # Data.
    data_dir: str = dataclasses.field(
        default="", metadata={"help": "The task's data folder, or one training file."})
    data_source: str = dataclasses.field(
        default="files", metadata={"help": "files: data_dir's TSV / JSON files | tfds: a GLUE "
                                           "task (or SNLI) prepared with TensorFlow Datasets "
                                           "in tfds_data_dir (finetune.readers.tfds)."})
    tfds_data_dir: str = dataclasses.field(
        default="", metadata={"help": "data_source=tfds: the TFDS data_dir ('' = TFDS' "
                                      "default, ~/tensorflow_datasets); never downloads."})
    output_dir: str = ""
    overwrite_output_dir: bool = dataclasses.field(
        default=False, metadata={"help": "Write into an output_dir that holds results of an "
                                         "earlier run (its results.json, model.keras and "
                                         "predictions are replaced)."})
    seq_length: int = 128
    max_train_examples: int = dataclasses.field(
        default=0, metadata={"help": "Use the first N training examples (0 = all); the "
                                     "held-out slice is cut from these."})
    max_eval_examples: int = dataclasses.field(
        default=0, metadata={"help": "Evaluate on the first N dev examples (0 = all)."})
    holdout_before_cap: bool = dataclasses.field(
        default=False, metadata={"help": (
            "Without a dev file: cut the held-out slice from the whole training file, then "
            "cap the rest with --max_train_examples, so the evaluation set does not shrink "
            "(or change) with the training budget.")})
    holdout_fraction: float = dataclasses.field(
        default=0.1, metadata={"help": "Without a dev file: evaluate on this last fraction of "
                                       "the training examples (held back from training)."})
    predict_test: bool = dataclasses.field(
        default=True, metadata={"help": "Write test predictions when data_dir has the test file."})
    # SQuAD.
    doc_stride: int = 128
    max_query_length: int = 64
    max_answer_length: int = 30
    n_best_size: int = 20
    tune_null_threshold: bool = dataclasses.field(
        default=True, metadata={"help": "SQuAD v2.0: choose the null threshold on dev."})
    null_threshold: float = dataclasses.field(
        default=0.0, metadata={"help": "SQuAD v2.0 threshold when not tuned."})
    # Optimisation.
    train_batch_size: int = 32
    eval_batch_size: int = 64
    pad_to_max_length: bool = dataclasses.field(
        default=False, metadata={"help": "Pad every batch to seq_length (one static shape, for "
                                         "TPUs) instead of grouping rows by length and padding "
                                         "each batch only to its longest row."})
    epochs: float = 3.0
    train_steps: int = dataclasses.field(
        default=0, metadata={"help": "Override the step count (0 = epochs x steps/epoch)."})
    learning_rates: Tuple[float, ...] = dataclasses.field(
        default=(), metadata={"help": "Learning rates to sweep ('' = BERT 5e-5,4e-5,3e-5,2e-5; "
                                      "GPT-1 6.25e-5)."})
    seeds: Tuple[int, ...] = dataclasses.field(
        default=(0,), metadata={"help": "One run per seed for every learning rate."})
    warmup_fraction: float = dataclasses.field(
        default=-1.0, metadata={"help": "Warmup steps / total (< 0: BERT 0.1, GPT-1 0.002)."})
    weight_decay: float = 0.01
    adam_epsilon: float = 1e-6
    clip_norm: float = 1.0
    lm_weight: float = dataclasses.field(
        default=0.5, metadata={"help": "GPT-1 auxiliary LM weight lambda (0 = no aux LM)."})
    classifier_dropout: float = 0.1
    loss: str = dataclasses.field(
        default="cross_entropy",
        metadata={"help": "cross_entropy | soft_f1 (1 - batch macro soft F1, for imbalanced "
                          "classification such as MRPC / CoLA; classification tasks only)."})
    # What trains.
    strategy: str = dataclasses.field(
        default="full", metadata={"help": "Freezing policy (finetune.freezing, not a "
                                  "tf.distribute strategy): full | frozen | top_k | gradual"})
    top_k: int = dataclasses.field(default=0, metadata={"help": "Layers trained by top_k."})
    feature_layers: int = dataclasses.field(
        default=1, metadata={"help": "Concatenate the top N hidden states (feature-based: 4)."})
    bilstm_layers: int = dataclasses.field(
        default=0, metadata={"help": "Randomly initialised BiLSTM layers between the features "
                                     "and the head (0 = none; BERT's feature-based NER: 2)."})
    bilstm_units: int = dataclasses.field(
        default=768, metadata={"help": "BiLSTM units per direction (the head reads 2x this)."})
    unfreeze_layers_per_stage: int = 1
    unfreeze_steps_per_stage: int = dataclasses.field(
        default=0, metadata={"help": "gradual: steps between stages (0 = one epoch)."})
    transfer_layers: int = dataclasses.field(
        default=-1, metadata={"help": "Copy the embeddings and the first k pretrained layers, "
                                      "re-initialise the rest (-1 = all)."})
    # Execution.
    distribution_strategy: str = dataclasses.field(
        default="one_device", metadata={"help": "one_device | mirrored | multi_worker | tpu"})
    tpu: str = ""
    num_cpu_devices: int = 0
    jit_compile: AutoBool = dataclasses.field(
        default=False, metadata={"help": "XLA-compile the training step; --jit_compile=auto: "
                                         "on for GPUs and TPUs, off on CPUs "
                                         "(tfmodels.precision)."})
    mixed_precision: str = dataclasses.field(
        default="", metadata={"help": "'' (float32) | float32 | mixed_bfloat16 | mixed_float16 | "
                                      "auto (bf16 on AMX CPUs and TPUs, fp16/bf16 on GPUs, else "
                                      "float32: tfmodels.precision)"})
    eval_every_epoch: bool = False
    log_every: int = 100
    save_model: bool = True
    export_dir: str = dataclasses.field(
        default="", metadata={"help": "Also export the selected model for TF Serving to "
                                      "<export_dir>/<task>/<next version>/ (raw text in)."})

    def __post_init__(self):
        # absl list flags arrive as strings.
        problems = []
        for name, kind in (("learning_rates", float), ("seeds", int)):
            try:
                object.__setattr__(self, name, tuple(kind(v) for v in getattr(self, name)))
            except (TypeError, ValueError):
                problems.append(f"{name} must be a comma-separated list of {kind.__name__}s, "
                                f"got {','.join(map(str, getattr(self, name)))!r}")
                object.__setattr__(self, name, ())
        if self.model not in MODELS:
            problems.append(f"model must be one of {MODELS}, got {self.model!r}")
        if not self.task:
            problems.append("task is required")
        else:
            spec = get_task(self.task)  # ValueError listing the known tasks
            if INPUT_FORMATS.get(self.model) == "gpt" and spec.kind in _BERT_ONLY_KINDS:
                problems.append(f"task {self.task!r} is a {spec.kind} task, which only BERT does "
                                f"(GPT-1 has no input transform for it); use --model=bert")
        if self.data_source not in DATA_SOURCES:
            problems.append(f"data_source must be one of {DATA_SOURCES}, got {self.data_source!r}")
        elif self.data_source == "files" and not self.data_dir:
            problems.append("data_dir is required")
        elif self.data_source == "tfds" and self.task and self.task not in TFDS_TASKS:
            problems.append(f"task {self.task!r} has no TFDS reader (data_source=tfds reads "
                            f"{', '.join(sorted(TFDS_TASKS))})")
        if not self.output_dir:
            problems.append("output_dir is required")
        if not self.seeds and not any(p.startswith("seeds") for p in problems):
            problems.append("seeds is empty")
        if any(lr <= 0 for lr in self.learning_rates):
            problems.append(f"learning rates must be positive, got {self.learning_rates}")
        if self.strategy not in freezing.FREEZING_POLICIES:
            problems.append(f"strategy must be one of {freezing.FREEZING_POLICIES}, got "
                            f"{self.strategy!r}")
        if self.distribution_strategy not in training.DISTRIBUTION_STRATEGIES:
            problems.append(f"distribution_strategy must be one of "
                            f"{training.DISTRIBUTION_STRATEGIES}, got "
                            f"{self.distribution_strategy!r}")
        if not 0.0 < self.holdout_fraction < 1.0:
            problems.append(f"holdout_fraction must be in (0, 1), got {self.holdout_fraction}")
        problems += precision.check_settings(self.mixed_precision, self.jit_compile)
        for name in ("seq_length", "train_batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
        if self.epochs <= 0 and self.train_steps <= 0:
            problems.append("epochs (or train_steps) must be positive")
        if self.warmup_fraction > 1.0:
            problems.append(f"warmup_fraction must be <= 1, got {self.warmup_fraction}")
        if self.transfer_layers >= 0 and not self.init_checkpoint:
            problems.append("transfer_layers needs an init_checkpoint to transfer from")
        if self.loss not in LOSSES:
            problems.append(f"loss must be one of {LOSSES}, got {self.loss!r}")
        elif self.loss == "soft_f1" and self.task and spec.kind != "classification":
            problems.append(f"loss soft_f1 is for classification tasks; task {self.task!r} is "
                            f"a {spec.kind} task (use --loss=cross_entropy)")
        if self.bilstm_layers < 0 or self.bilstm_units < 1:
            problems.append(f"bilstm_layers must be >= 0 and bilstm_units >= 1, got "
                            f"{self.bilstm_layers} and {self.bilstm_units}")
        if problems:
            raise ValueError("bad fine-tuning config: " + "; ".join(problems))

    @property
    def input_format(self) -> str:
        """"bert" or "gpt": the tokenizer, features, heads and losses `model` is fine-tuned
        with (the LSTM baseline uses GPT-1's "same framework", so "gpt")."""
        return INPUT_FORMATS[self.model]

    @property
    def resolved_learning_rates(self) -> Tuple[float, ...]:
        return self.learning_rates or (
            BERT_LEARNING_RATES if self.input_format == "bert" else GPT_LEARNING_RATES)

    @property
    def resolved_warmup_fraction(self) -> float:
        return (self.warmup_fraction if self.warmup_fraction >= 0
                else WARMUP_FRACTION[self.input_format])


# ---- checkpoints and tokenizers -----------------------------------------------------------------

def tokenizer_files(config: FinetuneConfig) -> Dict[str, str]:
    """The vocabulary files: the flags, else the files beside the checkpoint.
    BERT: {"vocab_file"}; GPT-1: {"encoder_file", "merges_file"}."""
    if config.input_format == "bert":
        return {"vocab_file": wordpiece_vocab_file(config.init_checkpoint, config.vocab_file)}
    return bpe_files(config.init_checkpoint, config.bpe_encoder_file, config.bpe_merges_file)


def tokenizer_for(config: FinetuneConfig):
    files = tokenizer_files(config)
    return load_tokenizer(config.input_format, files.get("vocab_file", ""),
                          files.get("encoder_file", ""), files.get("merges_file", ""),
                          config.lower_case)


@dataclasses.dataclass
class Pretrained:
    """What every run starts from: the backbone's class and config, its weights (None =
    random init) and the tokenizer."""

    backbone_class: type
    model_config: configs.TransformerConfig
    weights: Optional[List[np.ndarray]]
    tokenizer: Any
    checkpoint_format: str
    # Extra constructor arguments (the LSTM baseline's use_cudnn=False under jit_compile).
    backbone_options: Dict[str, Any] = dataclasses.field(default_factory=dict)

    def build(self, seed: int, transfer_layers: int = -1) -> keras.Model:
        """A fresh backbone under the current dtype policy: seeded init, then the pretrained
        weights (all, or the embeddings + first `transfer_layers` layers)."""
        keras.utils.set_random_seed(seed)
        backbone = self.backbone_class(self.model_config, **self.backbone_options)
        if self.weights is None:
            return backbone
        if transfer_layers < 0:
            backbone.set_weights(self.weights)
        else:
            source = self.backbone_class(self.model_config, **self.backbone_options)
            source.set_weights(self.weights)
            freezing.transfer_layers(source, backbone, transfer_layers)
        return backbone


def load_pretrained(config: FinetuneConfig, log: Callable[[str], None] = print) -> Pretrained:
    """Tokenizer + checkpoint (or random-init config), checked against each other."""
    # The checkpoint first: when it is missing, its vocabulary beside it is missing too, and
    # the missing checkpoint is what the user must fix.
    fmt = detect_checkpoint_format(config.init_checkpoint)
    tokenizer = tokenizer_for(config)
    expected = FORMAT_ARCHITECTURE.get(fmt)
    if expected and expected != config.model:
        raise ValueError(f"init_checkpoint {config.init_checkpoint} is a {fmt} checkpoint "
                         f"({expected}), but model is {config.model!r}")
    cls, config_cls, default_config = _BACKBONES[config.model]
    if fmt == "random":
        name = config.model_config or default_config
        cfg = configs.get_config(name, vocab_size=config.vocab_size or tokenizer.vocab_size)
        weights = None
        log(f"random init from {name} (no pretraining)")
    else:
        backbone = as_backbone(load_checkpoint(config.init_checkpoint, fmt, config.num_heads))
        if backbone_architecture(backbone) != config.model:
            raise ValueError(f"init_checkpoint {config.init_checkpoint} holds a "
                             f"{type(backbone).__name__}, but model is {config.model!r}")
        cfg, weights = backbone.config, backbone.get_weights()
        log(f"loaded {fmt} checkpoint {config.init_checkpoint}")
    if not isinstance(cfg, config_cls):
        raise ValueError(f"model {config.model!r} needs a {cls.__name__} config, got "
                         f"{type(cfg).__name__} ({config.model_config!r})")
    if tokenizer.vocab_size != cfg.vocab_size:
        # Smaller is as wrong as larger: the same id would mean another token.
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} ids but the model's embedding "
                         f"has {cfg.vocab_size} rows: vocabulary and checkpoint do not match")
    if config.seq_length > cfg.max_positions:
        raise ValueError(f"seq_length {config.seq_length} exceeds the model's "
                         f"{cfg.max_positions} positions")
    # XLA cannot compile the cuDNN LSTM kernel that Keras picks on GPUs.
    options = {"use_cudnn": False} if config.model == "lstm" and config.jit_compile else {}
    return Pretrained(cls, cfg, weights, tokenizer, fmt, options)


# ---- data ------------------------------------------------------------------------------------

@dataclasses.dataclass
class Split:
    """One split's examples (for metrics and prediction files) and their encoded features."""

    examples: List[Any]
    features: EncodedFeatures


@dataclasses.dataclass
class TaskData:
    """The encoded splits of one sweep, read once and shared by every run."""

    train: Split
    eval: Split
    test: Optional[Split]
    eval_source: str   # "dev" or "holdout"


def _task_options(config: FinetuneConfig, task: TaskSpec) -> Dict[str, Any]:
    if task.kind == "span":
        return {"doc_stride": config.doc_stride, "max_query_length": config.max_query_length}
    if task.kind in ("classification", "regression") and config.input_format == "gpt":
        return {"symmetric": task.name in GPT_SIMILARITY_TASKS}
    return {}


def _has_split(config: FinetuneConfig, task: TaskSpec, split: str) -> bool:
    return (os.path.isdir(config.data_dir) and split in task.files
            and os.path.exists(os.path.join(config.data_dir, task.files[split])))


def load_task_data(config: FinetuneConfig, task: TaskSpec, tokenizer,
                   log: Callable[[str], None] = print) -> TaskData:
    """Reads and encodes train, eval (dev file or held-out tail of train) and test."""
    if config.data_source == "tfds":
        from finetune.readers import tfds as tfds_reader
        read = lambda split: tfds_reader.read_tfds_glue(task.name, split, config.tfds_data_dir,
                                                        task.label_names)
        has_split = lambda split: tfds_reader.has_split(task.name, split, config.tfds_data_dir)
    else:
        if not os.path.exists(config.data_dir):
            raise FileNotFoundError(f"data_dir {config.data_dir} does not exist")
        read = lambda split: task.read(config.data_dir, split)
        has_split = lambda split: _has_split(config, task, split)
    where = (f"TFDS {config.tfds_data_dir or '(default data_dir)'}"
             if config.data_source == "tfds" else config.data_dir)
    train = read("train")
    has_dev = has_split("dev")
    holdout_first = config.holdout_before_cap and not has_dev
    if not holdout_first:
        train = train[:config.max_train_examples or None]
    if has_dev:
        dev, source = read("dev"), "dev"
    else:
        # SQuAD: hold out whole articles (questions on one context must not straddle the cut).
        group = (lambda e: e.article) if task.kind == "span" else None
        train, dev = holdout_split(train, config.holdout_fraction, group=group)
        source = "holdout"
        if holdout_first:
            train = train[:config.max_train_examples or None]
    if config.max_eval_examples:
        dev = dev[:config.max_eval_examples]
    if not train or not dev:
        raise ValueError(f"{where}: {len(train)} training and {len(dev)} evaluation "
                         f"examples; both must be non-empty")
    test = None
    if config.predict_test and has_split("test"):
        test = read("test")

    def encode(examples):
        return Split(examples, encode_examples(
            examples, task.kind, config.input_format, tokenizer, config.seq_length,
            label_names=task.label_names, **_task_options(config, task)))

    data = TaskData(encode(train), encode(dev), encode(test) if test else None, source)
    log(f"{task.name}: {len(train)} train examples ({len(data.train.features)} features), "
        f"{len(dev)} {source} examples, {len(test) if test else 0} test examples")
    for name, split in (("training", data.train), (source, data.eval)):
        if not split.features.label_keys:
            raise ValueError(f"the {name} examples of {task.name} in {where} have no "
                             "labels (is it a test file?)")
    return data


def train_dataset(features: EncodedFeatures, batch_size: int, seed: int,
                  pad_to_max_length: bool = False) -> tf.data.Dataset:
    """Inputs + labels, shuffled with `seed`, repeated, batches of `batch_size` rows grouped by
    length and trimmed to their longest (finetune.batching; pad_to_max_length: seq_length)."""
    return batching.train_dataset({**features.inputs(), **features.labels()}, batch_size, seed,
                                  pad_to_max_length)


class Predictor:
    """Batched inference under the strategy: model outputs for every feature, in order.
    Rows are run in length order, each batch only as wide as its longest (finetune.batching)."""

    def __init__(self, model: keras.Model, strategy: tf.distribute.Strategy,
                 output_keys: Sequence[str], batch_size: int, sequence_outputs: bool = False,
                 pad_to_max_length: bool = False):
        self.batch_size = batch_size
        self.sequence_outputs = sequence_outputs
        self.pad_to_max_length = pad_to_max_length
        self.predict_batch = batching.distributed_predictor(model, strategy, output_keys)

    def __call__(self, features: EncodedFeatures) -> Dict[str, np.ndarray]:
        bar = Progress(len(features), "evaluate", unit="rows")
        return batching.predict_in_length_order(
            self.predict_batch, features.inputs(), self.batch_size, self.sequence_outputs,
            self.pad_to_max_length, progress=bar.update)


# ---- decoding: the only per-kind code ------------------------------------------------------------

@dataclasses.dataclass
class Decoded:
    """Per-example predictions in the form the task metric takes (class ids, floats, answer
    texts, tag lists), plus what the prediction files add (probabilities, null odds)."""

    predictions: List[Any]
    probabilities: Optional[np.ndarray] = None
    null_scores: Optional[List[float]] = None   # SQuAD: null score - best non-null score


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def _decode_classes(outputs, split, config) -> Decoded:
    logits = outputs["logits"]
    return Decoded(logits.argmax(-1).tolist(), probabilities=_softmax(logits))


def _decode_regression(outputs, split, config) -> Decoded:
    return Decoded(outputs["predictions"].astype(float).tolist())


def _decode_spans(outputs, split, config) -> Decoded:
    answers = predict_answers(outputs["start_logits"], outputs["end_logits"],
                              split.features.metadata, n_best_size=config.n_best_size,
                              max_answer_length=config.max_answer_length, version_2=False)
    ordered = [answers[ex.qid] for ex in split.examples]
    return Decoded([a.text for a in ordered], null_scores=[a.score_diff for a in ordered])


def _decode_tags(outputs, split, config) -> Decoded:
    logits = outputs["logits"]
    return Decoded([decode_word_predictions(logits[i], feature)
                    for i, feature in enumerate(split.features.metadata)])


@dataclasses.dataclass(frozen=True)
class KindDecoder:
    output_keys: Tuple[str, ...]
    decode: Callable[[Dict[str, np.ndarray], Split, FinetuneConfig], Decoded]
    gold: Callable[[Any, TaskSpec], Any]     # example -> what the metric compares against
    sequence_outputs: bool = False           # outputs have a per-position axis (span, tags)

    def predictor(self, model, strategy, config: "FinetuneConfig") -> "Predictor":
        return Predictor(model, strategy, self.output_keys, config.eval_batch_size,
                         self.sequence_outputs, config.pad_to_max_length)


DECODERS: Dict[str, KindDecoder] = {
    "classification": KindDecoder(("logits",), _decode_classes,
                                  lambda ex, task: task.label_names.index(ex.label)),
    "regression": KindDecoder(("predictions",), _decode_regression, lambda ex, task: float(ex.label)),
    "multiple_choice": KindDecoder(("logits",), _decode_classes, lambda ex, task: int(ex.label)),
    "span": KindDecoder(("start_logits", "end_logits"), _decode_spans,
                        lambda ex, task: [a for a, _ in ex.answers] or [""],
                        sequence_outputs=True),
    "token_classification": KindDecoder(("logits",), _decode_tags,
                                        lambda ex, task: list(ex.tags), sequence_outputs=True),
}


def score(task: TaskSpec, examples: Sequence[Any], decoded: Decoded,
          config: FinetuneConfig) -> Dict[str, float]:
    """task.metric on the decoded predictions. SQuAD v2.0 also tunes the null threshold on these
    examples (official `best_f1_thresh`) and reports the metrics at it as the main numbers."""
    gold = [DECODERS[task.kind].gold(ex, task) for ex in examples]
    if task.name != "squad_v2":
        return task.metric(gold, decoded.predictions)
    metrics = task.metric(gold, decoded.predictions, null_scores=decoded.null_scores,
                          threshold=config.null_threshold)
    if config.tune_null_threshold:
        tuned = metrics["best_f1_thresh"]
        metrics = {**task.metric(gold, decoded.predictions, null_scores=decoded.null_scores,
                                 threshold=tuned), "null_threshold": tuned}
    else:
        metrics["null_threshold"] = config.null_threshold
    return metrics


def final_answers(task: TaskSpec, decoded: Decoded, threshold: float) -> List[Any]:
    """Predictions as written: SQuAD v2.0 answers "" where the null score beats `threshold`."""
    if task.name != "squad_v2":
        return decoded.predictions
    return ["" if s > threshold else p for p, s in zip(decoded.predictions, decoded.null_scores)]


def write_predictions(task: TaskSpec, split: Split, decoded: Decoded, folder: str,
                      threshold: float = 0.0) -> List[str]:
    """The task's prediction file(s) in `folder`; returns the paths written."""
    examples, preds = split.examples, final_answers(task, decoded, threshold)
    if task.name in prediction_files.GLUE_SUBMISSION_FILES:
        return [prediction_files.write_glue_predictions(
            task.name, preds, folder, indices=[ex.guid for ex in examples])]
    path = os.path.join(folder, "predictions.jsonl")
    if task.kind == "span":
        written = prediction_files.write_squad_predictions(
            os.path.join(folder, "predictions.json"),
            {ex.qid: p for ex, p in zip(examples, preds)},
            null_odds=({ex.qid: s for ex, s in zip(examples, decoded.null_scores)}
                       if task.name == "squad_v2" else None))
        return list(written.values())
    if task.kind == "token_classification":
        return [prediction_files.write_ner_jsonl(path, examples, preds)]
    if task.kind == "multiple_choice":
        return [prediction_files.write_choice_predictions(
            path, [ex.guid for ex in examples], preds, decoded.probabilities,
            [ex.label for ex in examples])]
    records = []
    for i, ex in enumerate(examples):
        record = {"guid": ex.guid, "prediction": (task.label_names[preds[i]]
                                                  if task.kind == "classification" else preds[i])}
        if decoded.probabilities is not None:
            record["probabilities"] = decoded.probabilities[i].tolist()
        if ex.label is not None:
            record["label"] = ex.label
        records.append(record)
    return [prediction_files.write_jsonl(path, records)]


# ---- one run ----------------------------------------------------------------------------------

@dataclasses.dataclass
class RunResult:
    """One (learning rate, seed) run. `model` and `decoded` stay in memory (not in JSON)."""

    learning_rate: float
    seed: int
    metrics: Dict[str, float]
    train_steps: int = 0
    seconds_per_step: float = float("nan")
    train_seconds: float = 0.0
    final_loss: float = float("nan")
    epoch_metrics: List[Dict[str, float]] = dataclasses.field(default_factory=list)
    model: Optional[keras.Model] = None
    decoded: Optional[Decoded] = None

    def to_json(self, main_metric: str) -> Dict[str, Any]:
        return {"learning_rate": self.learning_rate, "seed": self.seed,
                main_metric: self.metrics.get(main_metric), "metrics": self.metrics,
                "train_steps": self.train_steps, "seconds_per_step": self.seconds_per_step,
                "train_seconds": self.train_seconds, "final_loss": self.final_loss,
                "epoch_metrics": self.epoch_metrics}


@dataclasses.dataclass
class Context:
    """Everything the runs of one sweep share (loaded once)."""

    config: FinetuneConfig
    task: TaskSpec
    pretrained: Pretrained
    data: TaskData
    strategy: tf.distribute.Strategy
    log: Callable[[str], None] = print


def _build_task_model(ctx: Context, seed: int) -> keras.Model:
    config = ctx.config
    backbone = ctx.pretrained.build(seed, config.transfer_layers)
    options = {"dropout": config.classifier_dropout, "feature_layers": config.feature_layers,
               "bilstm_layers": config.bilstm_layers, "bilstm_units": config.bilstm_units}
    if config.input_format == "gpt":
        options["aux_lm"] = config.lm_weight > 0
    if ctx.task.kind == "span":
        options.pop("dropout")  # run_squad.py: no dropout before the span layer
    model = build_task_model(ctx.task, backbone, config.model, **options)
    if config.strategy != "gradual":
        freezing.apply_freezing(model, config.strategy, config.top_k)
    return model


def evaluate(ctx: Context, model: keras.Model, split: Split) -> Tuple[Dict[str, float], Decoded]:
    kind = DECODERS[ctx.task.kind]
    outputs = kind.predictor(model, ctx.strategy, ctx.config)(split.features)
    decoded = kind.decode(outputs, split, ctx.config)
    return score(ctx.task, split.examples, decoded, ctx.config), decoded


def finetune_once(ctx: Context, learning_rate: float, seed: int) -> RunResult:
    """Trains one model with this learning rate and seed and evaluates it."""
    config, strategy, log = ctx.config, ctx.strategy, ctx.log
    n_train = len(ctx.data.train.features)
    steps_per_epoch = n_train // config.train_batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"{n_train} training features are fewer than one batch of "
                         f"{config.train_batch_size}; lower train_batch_size")
    total = config.train_steps or max(1, int(round(config.epochs * steps_per_epoch)))
    warmup = int(round(ctx.config.resolved_warmup_fraction * total))
    policy = config.mixed_precision or "float32"
    keras.mixed_precision.set_global_policy(policy)
    try:
        with strategy.scope():
            model = _build_task_model(ctx, seed)
            optimizer = create_optimizer(
                learning_rate, total_steps=total, warmup_steps=warmup, decay="linear",
                weight_decay=config.weight_decay, epsilon=config.adam_epsilon,
                loss_scale=config.mixed_precision == "mixed_float16")
            unfreezing = None
            if config.strategy == "gradual":
                unfreezing = freezing.GradualUnfreezing(
                    model, config.unfreeze_layers_per_stage,
                    config.unfreeze_steps_per_stage or steps_per_epoch)
                # One optimizer for all stages: built on every variable any stage trains.
                optimizer.build(unfreezing.trainable_candidates())
        loss_fn = task_loss(ctx.task, config.model, config.lm_weight, loss=config.loss)
        batches = strategy.experimental_distribute_dataset(
            train_dataset(ctx.data.train.features, config.train_batch_size, seed,
                          config.pad_to_max_length))
        # The batches' spec (sequence axis open) as the step's signature: one trace for every
        # bucket width instead of one per width.
        make_step = lambda: TrainStep(model, optimizer, loss_fn, strategy,
                                      jit_compile=config.jit_compile, clip_norm=config.clip_norm,
                                      input_signature=batches.element_spec)
        train_step = make_step()
        iterator = iter(batches)
        result = RunResult(learning_rate, seed, {}, train_steps=total)
        log(f"lr {learning_rate:g} seed {seed}: {total} steps ({steps_per_epoch}/epoch, "
            f"{warmup} warmup), {model.count_params():,} parameters, policy {policy}")
        start = timed_from = time.perf_counter()
        metrics = {}
        bar = Progress(total, f"fine-tune lr {learning_rate:g} seed {seed}")
        for step in range(total):
            if unfreezing is not None and unfreezing.update(step):
                train_step = make_step()  # the trainable set changed: retrace
            metrics = train_step(next(iterator))
            if step == 0:
                float(metrics["loss"])  # wait for the first (tracing) step
                timed_from = time.perf_counter()
            done = step + 1
            if done % bar.log_every == 0 or done == total or bar.interactive:
                bar.update(done, loss=float(metrics["loss"]))
            if done % config.log_every == 0 or done == total:
                log(f"  step {done}/{total}  " + "  ".join(
                    f"{k} {float(v):.4g}" for k, v in metrics.items()))
            if config.eval_every_epoch and done % steps_per_epoch == 0 and done < total:
                epoch_metrics, _ = evaluate(ctx, model, ctx.data.eval)
                result.epoch_metrics.append({"step": done, **epoch_metrics})
                log(f"  epoch {done // steps_per_epoch}: {epoch_metrics}")
        result.final_loss = float(metrics["loss"])
        end = time.perf_counter()
        result.train_seconds = end - start
        result.seconds_per_step = ((end - timed_from) / (total - 1) if total > 1
                                   else end - start)
        result.metrics, result.decoded = evaluate(ctx, model, ctx.data.eval)
        if config.eval_every_epoch:
            result.epoch_metrics.append({"step": total, **result.metrics})
        result.model = model
        log(f"lr {learning_rate:g} seed {seed}: {ctx.task.main_metric} "
            f"{result.metrics[ctx.task.main_metric]:.4f}  ({result.seconds_per_step:.3f} s/step)")
        return result
    finally:
        keras.mixed_precision.set_global_policy("float32")


# ---- the sweep ----------------------------------------------------------------------------------

def summarize_runs(runs: Sequence[RunResult], main_metric: str,
                   learning_rates: Sequence[float]) -> Dict[str, Any]:
    """Per learning rate: mean and std (sample std, ddof=1; 0 for one run) of the main metric
    over seeds, and the best seed. The chosen learning rate has the highest mean (ties: the
    one listed first). Returns {"per_learning_rate": {...}, "chosen_learning_rate", "mean",
    "std", "selected_seed"}."""
    per_lr: Dict[str, Dict[str, Any]] = {}
    best_lr, best_mean = None, -math.inf
    for lr in learning_rates:
        mine = [r for r in runs if r.learning_rate == lr]
        if not mine:
            continue
        values = np.array([r.metrics[main_metric] for r in mine], np.float64)
        mean = float(values.mean())
        std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        best_run = mine[int(values.argmax())]
        per_lr[repr(lr)] = {"learning_rate": lr, "mean": mean, "std": std, "runs": len(mine),
                            "values": values.tolist(), "best_seed": best_run.seed,
                            "seconds_per_step": float(np.mean([r.seconds_per_step for r in mine]))}
        if mean > best_mean:
            best_lr, best_mean = lr, mean
    if best_lr is None:
        raise ValueError("no runs to summarise")
    chosen = per_lr[repr(best_lr)]
    return {"per_learning_rate": per_lr, "chosen_learning_rate": best_lr, "mean": chosen["mean"],
            "std": chosen["std"], "selected_seed": chosen["best_seed"]}


def make_strategy(config: FinetuneConfig) -> tf.distribute.Strategy:
    """The tf.distribute strategy of `config.distribution_strategy`."""
    return training.make_strategy(config.distribution_strategy, config.tpu,
                                  config.num_cpu_devices)


RunFn = Callable[[Context, float, int], RunResult]


# What run_finetune writes in output_dir (a rerun would replace them).
FINETUNE_OUTPUTS = ("results.json", "model.keras", "predictions")


def run_finetune(config: FinetuneConfig, run_fn: RunFn = finetune_once,
                 strategy: Optional[tf.distribute.Strategy] = None,
                 log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Sweeps learning rates x seeds, picks the lr with the best mean dev score, writes
    results.json, the selected run's predictions and model.keras; returns the results dict.

    run_fn: one run (default `finetune_once`); tests substitute a fake to check selection.
    """
    earlier = [name for name in FINETUNE_OUTPUTS
               if os.path.exists(os.path.join(config.output_dir, name))]
    if earlier and not config.overwrite_output_dir:
        raise ValueError(f"output_dir {config.output_dir} already holds fine-tuning results "
                         f"({', '.join(earlier)}); pass --overwrite_output_dir to replace them, "
                         f"or use another folder")
    strategy = strategy or make_strategy(config)
    # auto settings are decided once, here: every run of the sweep uses the same choice.
    chosen = precision.resolve_precision(config.mixed_precision, config.jit_compile,
                                         strategy=strategy)
    log(chosen.describe())
    config = dataclasses.replace(config, mixed_precision=chosen.policy,
                                 jit_compile=chosen.jit_compile)
    task = get_task(config.task)
    pretrained = load_pretrained(config, log)
    data = load_task_data(config, task, pretrained.tokenizer, log)
    ctx = Context(config, task, pretrained, data, strategy, log)
    learning_rates = config.resolved_learning_rates
    runs: List[RunResult] = []
    best_per_lr: Dict[float, RunResult] = {}  # keep one model per lr, not one per run
    for lr in learning_rates:
        for seed in config.seeds:
            run = run_fn(ctx, lr, seed)
            runs.append(run)
            kept = best_per_lr.get(lr)
            if kept is None or run.metrics[task.main_metric] > kept.metrics[task.main_metric]:
                if kept is not None:
                    kept.model = kept.decoded = None
                best_per_lr[lr] = run
            else:
                run.model = run.decoded = None
    summary = summarize_runs(runs, task.main_metric, learning_rates)
    selected = best_per_lr[summary["chosen_learning_rate"]]

    os.makedirs(config.output_dir, exist_ok=True)
    threshold = selected.metrics.get("null_threshold", config.null_threshold)
    files: Dict[str, List[str]] = {}
    if selected.decoded is not None:
        files["eval"] = write_predictions(task, data.eval, selected.decoded,
                                          os.path.join(config.output_dir, "predictions", "eval"),
                                          threshold)
    model_path = None
    if selected.model is not None:
        if data.test is not None:
            kind = DECODERS[task.kind]
            outputs = kind.predictor(selected.model, strategy, config)(data.test.features)
            files["test"] = write_predictions(
                task, data.test, kind.decode(outputs, data.test, config),
                os.path.join(config.output_dir, "predictions", "test"), threshold)
        if config.save_model:
            model_path = save_model(selected.model, os.path.join(config.output_dir, "model.keras"))
    export_path = None
    if config.export_dir and selected.model is not None:
        from finetune.export import export_saved_model
        export_path = export_saved_model(
            selected.model, task, pretrained.tokenizer, config.export_dir, task.name,
            config.seq_length, max_query_length=config.max_query_length,
            max_answer_length=config.max_answer_length,
            pad_to_max_length=config.pad_to_max_length)
        log(f"exported {export_path}")
    results = {
        "task": task.name, "kind": task.kind, "model": config.model,
        "checkpoint_format": pretrained.checkpoint_format,
        "main_metric": task.main_metric,
        "chosen_learning_rate": summary["chosen_learning_rate"],
        "selected_run": {"learning_rate": selected.learning_rate, "seed": selected.seed,
                         "metrics": selected.metrics},
        "mean": summary["mean"], "std": summary["std"],
        "seconds_per_step": summary["per_learning_rate"][
            repr(summary["chosen_learning_rate"])]["seconds_per_step"],
        "per_learning_rate": summary["per_learning_rate"],
        "runs": [r.to_json(task.main_metric) for r in runs],
        "eval_source": data.eval_source,
        "num_train_examples": len(data.train.examples),
        "num_eval_examples": len(data.eval.examples),
        "num_test_examples": len(data.test.examples) if data.test else 0,
        "prediction_files": files, "model_file": model_path, "export": export_path,
        "precision": chosen.as_dict(),
        "config": {**dataclasses.asdict(config),
                   "learning_rates": list(learning_rates),
                   "warmup_fraction": config.resolved_warmup_fraction},
    }
    results = _json_safe(results)
    prediction_files.atomic_write_text(os.path.join(config.output_dir, "results.json"),
                                       json.dumps(results, indent=2) + "\n")
    log(f"{task.name}: chosen lr {summary['chosen_learning_rate']:g}, {task.main_metric} "
        f"{summary['mean']:.4f} +- {summary['std']:.4f} over {len(config.seeds)} seed(s); "
        f"wrote {config.output_dir}/results.json")
    return results


def save_model(model: keras.Model, path: str) -> str:
    """model.save to a temp name in the same folder, then rename (never a half-written file)."""
    folder, name = os.path.split(path)
    temp = os.path.join(folder, f".{name[:-len('.keras')]}.tmp.keras")
    try:
        model.save(temp)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)
    return path


def _json_safe(value):
    """Tuples -> lists, NaN / inf -> None: what results.json holds, strict JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value
