"""FinetuneConfig: every setting of a fine-tuning run (the binary's flags are generated from
its fields, tfmodels.config_flags), checked as a whole in `__post_init__`, and the papers'
defaults it resolves (learning rates, warmup)."""
from __future__ import annotations

import dataclasses
import numbers
from typing import List, Tuple

from finetune import freezing
from finetune.losses import LOSSES
from finetune.readers.tfds import TFDS_TASKS
from finetune.tasks import TASKS, get_task
from tfmodels import configs, precision, training
from tfmodels.architectures import ARCHITECTURES, input_format
from tfmodels.bert import BertEncoder
from tfmodels.config_flags import AutoBool, option
from tfmodels.gpt import GptDecoder
from tfmodels.lstm import LstmDecoder

BERT_LEARNING_RATES = (5e-5, 4e-5, 3e-5, 2e-5)   # BERT Section 4.1 / Appendix A.3
GPT_LEARNING_RATES = (6.25e-5,)                  # GPT-1 Section 4.1
WARMUP_FRACTION = {"bert": 0.1, "gpt": 0.002}    # BERT's 10%; GPT-1's 0.2%
# Each model's backbone class, config class and default random-init config.
BACKBONES = {"bert": (BertEncoder, configs.BertConfig, "bert_base"),
              "gpt": (GptDecoder, configs.GptConfig, "gpt1"),
              "lstm": (LstmDecoder, configs.LstmConfig, "lstm_2048")}
DATA_SOURCES = ("files", "tfds")


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    # What to fine-tune.
    task: str = option("", "The task to fine-tune on (finetune.tasks; register_task adds one).",
                       choices=lambda: tuple(sorted(TASKS)))
    model: str = option(
        "bert",
        "bert | gpt | lstm (GPT-1's LSTM baseline, fine-tuned like GPT-1: BPE, input "
        "transforms, aux LM)",
        choices=ARCHITECTURES)
    init_checkpoint: str = option(
        "", "HF BERT folder, TF1 BERT folder, OpenAI GPT .npy folder, HF openai-gpt folder, a "
        ".keras file or a pretraining model_dir (detected from the files), or preset:NAME for "
        "a released checkpoint (bert-gpt-presets lists them); empty: random init.")
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
    data_source: str = option(
        "files",
        "files: data_dir's TSV / JSON files | tfds: a GLUE task (or SNLI) prepared with "
        "TensorFlow Datasets in tfds_data_dir (finetune.readers.tfds).",
        choices=DATA_SOURCES)
    tfds_data_dir: str = dataclasses.field(
        default="", metadata={"help": "data_source=tfds: the TFDS data_dir ('' = TFDS' "
                                      "default, ~/tensorflow_datasets); never downloads."})
    output_dir: str = option(
        "",
        "Folder for results.json, model.keras, predictions/ and TensorBoard events (train/, "
        "eval/); one run writes it at a time.")
    overwrite_output_dir: bool = dataclasses.field(
        default=False, metadata={"help": "Write into an output_dir that holds results of an "
                                         "earlier run (its results.json, model.keras and "
                                         "predictions are replaced)."})
    seq_length: int = option(
        128,
        "Most tokens per example (longer pairs / documents are truncated; SQuAD: split into "
        "windows).")
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
    doc_stride: int = option(
        128, "SQuAD: tokens between the starts of a long context's windows.")
    max_query_length: int = option(
        64, "SQuAD: most question tokens (longer questions are cut).")
    max_answer_length: int = option(
        30, "SQuAD: most tokens of a predicted answer span.")
    n_best_size: int = option(
        20, "SQuAD: start and end candidates kept per window when decoding a span.")
    tune_null_threshold: bool = dataclasses.field(
        default=True, metadata={"help": "SQuAD v2.0: choose the null threshold on dev."})
    null_threshold: float = dataclasses.field(
        default=0.0, metadata={"help": "SQuAD v2.0 threshold when not tuned."})
    # Optimisation.
    train_batch_size: int = option(
        32, "Examples per training step (across every replica).")
    eval_batch_size: int = option(
        64, "Examples per evaluation / prediction batch.")
    pad_to_max_length: bool = dataclasses.field(
        default=False, metadata={"help": "Pad every batch to seq_length (one static shape, for "
                                         "TPUs) instead of grouping rows by length and padding "
                                         "each batch only to its longest row."})
    epochs: float = option(
        3.0, "Passes over the training examples (fractions allowed; --train_steps overrides).")
    train_steps: int = dataclasses.field(
        default=0, metadata={"help": "Override the step count (0 = epochs x steps/epoch)."})
    learning_rates: Tuple[float, ...] = dataclasses.field(
        default=(), metadata={"help": "Learning rates to sweep ('' = BERT 5e-5,4e-5,3e-5,2e-5; "
                                      "GPT-1 6.25e-5)."})
    seeds: Tuple[int, ...] = dataclasses.field(
        default=(0,), metadata={"help": "One run per seed for every learning rate."})
    warmup_fraction: float = dataclasses.field(
        default=-1.0, metadata={"help": "Warmup steps / total (< 0: BERT 0.1, GPT-1 0.002)."})
    weight_decay: float = option(
        0.01, "AdamW decoupled weight decay (not on biases and LayerNorm).")
    adam_epsilon: float = option(
        1e-6, "AdamW epsilon (BERT's 1e-6).")
    clip_norm: float = option(
        1.0, "Clip the global gradient norm to this (0 = no clipping).")
    lm_weight: float = dataclasses.field(
        default=0.5, metadata={"help": "GPT-1 auxiliary LM weight lambda (0 = no aux LM)."})
    classifier_dropout: float = option(
        0.1, "Dropout before the task head.")
    loss: str = option(
        "cross_entropy",
        "cross_entropy | soft_f1 (1 - batch macro soft F1, for imbalanced classification such "
        "as MRPC / CoLA; classification tasks only).",
        choices=LOSSES)
    # What trains.
    freezing: str = option(
        "full", "What trains (finetune.freezing): everything, nothing of the encoder, its top "
        "--top_k layers, or gradual unfreezing.", choices=freezing.FREEZING_POLICIES)
    top_k: int = option(0, "freezing=top_k: how many of the top encoder layers train.")
    feature_layers: int = dataclasses.field(
        default=1, metadata={"help": "Concatenate the top N hidden states (feature-based: 4)."})
    bilstm_layers: int = dataclasses.field(
        default=0, metadata={"help": "Randomly initialised BiLSTM layers between the features "
                                     "and the head (0 = none; BERT's feature-based NER: 2)."})
    bilstm_units: int = dataclasses.field(
        default=768, metadata={"help": "BiLSTM units per direction (the head reads 2x this)."})
    unfreeze_layers_per_stage: int = option(
        1, "gradual: layers unfrozen at each stage, top first.")
    unfreeze_steps_per_stage: int = dataclasses.field(
        default=0, metadata={"help": "gradual: steps between stages (0 = one epoch)."})
    transfer_layers: int = dataclasses.field(
        default=-1, metadata={"help": "Copy the embeddings and the first k pretrained layers, "
                                      "re-initialise the rest (-1 = all)."})
    # Execution.
    distribution_strategy: str = option(
        "one_device", "one_device | mirrored | multi_worker | tpu",
        choices=training.DISTRIBUTION_STRATEGIES)
    tpu: str = option(
        "", "distribution_strategy=tpu: the TPU name or grpc:// address.")
    num_cpu_devices: int = option(
        0,
        "Split the CPU into this many logical devices (0 = one), to run the mirrored strategy "
        "without accelerators.")
    jit_compile: AutoBool = dataclasses.field(
        default=False, metadata={"help": "XLA-compile the training step; --jit_compile=auto: "
                                         "on for GPUs and TPUs; on CPUs only where "
                                         "XLA's measured matmul is >= 1.3x faster "
                                         "(tfmodels.precision)."})
    mixed_precision: str = option(precision.AUTO, precision.MIXED_PRECISION_HELP,
                                  choices=precision.MIXED_PRECISION_CHOICES)
    eval_every_epoch: bool = option(
        False, "Also evaluate on dev after every epoch (TensorBoard eval/ per epoch).")
    log_every: int = option(
        100, "Steps between progress lines and TensorBoard train/ points.")
    save_model: bool = option(
        True, "Save the chosen run's model to <output_dir>/model.keras.")
    export_dir: str = dataclasses.field(
        default="", metadata={"help": "Also export the selected model for TF Serving to "
                                      "<export_dir>/<task>/<next version>/ (raw text in)."})

    def __post_init__(self):
        problems = []
        # The flags parse their items (tfmodels.config_flags); Python callers pass tuples.
        for name, kind, noun in (("learning_rates", numbers.Real, "numbers"),
                                 ("seeds", numbers.Integral, "ints")):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not all(
                    isinstance(v, kind) and not isinstance(v, bool) for v in value):
                problems.append(f"{name} must be a tuple of {noun}, got {value!r}")
        if self.model not in ARCHITECTURES:
            problems.append(f"model must be one of {ARCHITECTURES}, got {self.model!r}")
        if not self.task:
            problems.append("task is required")
        else:
            spec = get_task(self.task)  # ValueError listing the known tasks
            if self.model in ARCHITECTURES:
                problems += spec.kind.problems(spec, input_format(self.model))
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
        if not any(p.startswith("learning_rates") for p in problems) and any(
                lr <= 0 for lr in self.learning_rates):
            problems.append(f"learning rates must be positive, got {self.learning_rates}")
        if self.freezing not in freezing.FREEZING_POLICIES:
            problems.append(f"freezing must be one of {freezing.FREEZING_POLICIES}, got "
                            f"{self.freezing!r}")
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
        problems += _preset_problems(self.init_checkpoint, self.model, self.lower_case)
        if self.loss not in LOSSES:
            problems.append(f"loss must be one of {LOSSES}, got {self.loss!r}")
        elif self.loss == "soft_f1" and self.task and not spec.kind.supports_soft_f1:
            problems.append(f"loss soft_f1 is for classification tasks; task {self.task!r} is "
                            f"a {spec.kind.name} task (use --loss=cross_entropy)")
        if self.bilstm_layers < 0 or self.bilstm_units < 1:
            problems.append(f"bilstm_layers must be >= 0 and bilstm_units >= 1, got "
                            f"{self.bilstm_layers} and {self.bilstm_units}")
        if problems:
            raise ValueError("bad fine-tuning config: " + "; ".join(problems))

    @property
    def input_format(self) -> str:
        """"bert" or "gpt": the tokenizer, features, heads and losses `model` is fine-tuned
        with (the LSTM baseline uses GPT-1's "same framework", so "gpt")."""
        return input_format(self.model)

    @property
    def resolved_learning_rates(self) -> Tuple[float, ...]:
        return self.learning_rates or (
            BERT_LEARNING_RATES if self.input_format == "bert" else GPT_LEARNING_RATES)

    @property
    def resolved_warmup_fraction(self) -> float:
        return (self.warmup_fraction if self.warmup_fraction >= 0
                else WARMUP_FRACTION[self.input_format])


def _preset_problems(init_checkpoint: str, model: str, lower_case: bool) -> List[str]:
    """A `preset:NAME` checkpoint must be known, of `model`'s architecture, and tokenised
    with its own casing (a cased BERT fed lowercased text would train without complaint)."""
    from tfmodels.presets import PRESET_PREFIX, get_preset
    if not init_checkpoint.startswith(PRESET_PREFIX):
        return []
    preset = get_preset(init_checkpoint[len(PRESET_PREFIX):])  # ValueError: unknown
    if input_format(model) != preset.architecture or model == "lstm":
        return [f"init_checkpoint {init_checkpoint} is a {preset.architecture} model, but "
                f"model is {model!r}"]
    if preset.architecture == "bert" and preset.lower_case != lower_case:
        fix = "--lower_case" if preset.lower_case else "--nolower_case"
        return [f"init_checkpoint {init_checkpoint} is {'un' if preset.lower_case else ''}cased: "
                f"pass {fix}"]
    return []
