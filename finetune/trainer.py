"""The fine-tuning loop for every task of both papers: one loop, a learning-rate x seed sweep,
model selection on dev, and the files a run leaves behind.

`run_finetune(config)` is what the absl binary `finetune/run_finetune.py` calls and what tests
call directly:

    read (finetune.tasks) -> encode (the task's kind, finetune.kinds) -> model from the
    checkpoint (the kind's head) -> train (finetune.driver: freezing policy, AdamW with warmup +
    linear decay, TrainStep) -> predict on the dev / held-out set -> the kind's decoding + the
    task metric

once per (learning rate, seed). BERT sweeps {5e-5, 4e-5, 3e-5, 2e-5} and keeps the learning
rate with the best MEAN dev score over seeds (Section 4.1 picks on dev; the mean makes the
choice robust to one lucky seed); GPT-1 uses 6.25e-5. Nothing here depends on the task's kind:
its kind object (finetune.kinds) encodes, builds the head, decodes (argmax classes, a
regression scalar, SQuAD spans with the v2.0 null threshold tuned on dev, NER word tags) and
writes the prediction files.

The settings are `FinetuneConfig` (finetune.config), the splits finetune.data's, the training
loop finetune.driver's (shared with the Python API); this module loads the checkpoint and
tokenizer, runs, sweeps and writes. The model of each run is built in the run's dtype policy
with the run's seed: no process-wide state is changed.

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

import contextlib
import dataclasses
import json
import math
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from finetune import evaluation, freezing
from finetune import predictions as prediction_files
from finetune.config import BACKBONES, FinetuneConfig
from finetune.data import Split, TaskData, load_task_data
from finetune.driver import (TensorBoardLog, TrainingDiverged, TrainOptions, plan_schedule,
                             train)
from finetune.kinds import Decoded, DecodeOptions
from finetune.models import as_backbone, backbone_architecture, build_task_model
from finetune.tasks import TaskSpec, get_task
from tfmodels import configs, precision, training
from tfmodels.files import atomic_path, json_safe
from tfmodels.folder_lock import exclusive_folder, is_chief
from tfmodels.checkpoints.formats import (FORMAT_ARCHITECTURE, bpe_files,
                                         detect_checkpoint_format, load_checkpoint,
                                         wordpiece_vocab_file)
from tfmodels.tokenizers.loading import load_tokenizer

# ---- checkpoints and tokenizers -----------------------------------------------------------------

def tokenizer_files(config: FinetuneConfig) -> Dict[str, str]:
    """The vocabulary files: the flags, else the files beside the checkpoint.
    BERT: {"vocab_file"}; GPT-1: {"encoder_file", "merges_file"}."""
    if config.input_format == "bert":
        return {"vocab_file": wordpiece_vocab_file(config.init_checkpoint, config.vocab_file)}
    return bpe_files(config.init_checkpoint, config.bpe_encoder_file, config.bpe_merges_file)


def resolved_tokenizer_flags(config: FinetuneConfig) -> Dict[str, str]:
    """`tokenizer_files` under the config's (and the flags') names."""
    names = {"vocab_file": "vocab_file", "encoder_file": "bpe_encoder_file",
             "merges_file": "bpe_merges_file"}
    return {names[k]: os.path.abspath(v) for k, v in tokenizer_files(config).items() if v}


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

    def build(self, seed: int, transfer_layers: int = -1, dtype: Any = None) -> keras.Model:
        """A fresh backbone computing in `dtype` (a Keras policy name; None: the current
        policy): init seeded with `seed`, then the pretrained weights (all, or the embeddings
        + first `transfer_layers` layers)."""
        backbone = self.backbone_class(self.model_config, seed=seed, dtype=dtype,
                                       **self.backbone_options)
        if self.weights is None:
            return backbone
        if transfer_layers < 0:
            backbone.set_weights(self.weights)
        else:
            source = self.backbone_class(self.model_config, dtype=dtype, **self.backbone_options)
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
    cls, config_cls, default_config = BACKBONES[config.model]
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
    diverged: str = ""      # why the run stopped (finetune.driver.TrainingDiverged); '' if not

    def to_json(self, main_metric: str) -> Dict[str, Any]:
        return {"learning_rate": self.learning_rate, "seed": self.seed,
                main_metric: self.metrics.get(main_metric), "metrics": self.metrics,
                "train_steps": self.train_steps, "seconds_per_step": self.seconds_per_step,
                "train_seconds": self.train_seconds, "final_loss": self.final_loss,
                "epoch_metrics": self.epoch_metrics, "diverged": self.diverged or None}


@dataclasses.dataclass
class Context:
    """Everything the runs of one sweep share (loaded once)."""

    config: FinetuneConfig
    task: TaskSpec
    pretrained: Pretrained
    data: TaskData
    strategy: tf.distribute.Strategy
    log: Callable[[str], None] = print


def build_model(ctx: Context, seed: int) -> keras.Model:
    """The run's TaskModel: the pretrained backbone and a fresh head, seeded with `seed`, in
    the run's dtype policy."""
    config, task = ctx.config, ctx.task
    policy = config.mixed_precision or "float32"
    backbone = ctx.pretrained.build(seed, config.transfer_layers, dtype=policy)
    options = {"dropout": config.classifier_dropout, "feature_layers": config.feature_layers,
               "bilstm_layers": config.bilstm_layers, "bilstm_units": config.bilstm_units,
               "dtype": policy, "seed": seed}
    if config.input_format == "gpt":
        options["aux_lm"] = config.lm_weight > 0
    options = task.kind.head_options(task, config.input_format, options)
    return build_task_model(task, backbone, config.model, **options)


def evaluate_split(ctx: Context, model: keras.Model,
                   split: Split) -> Tuple[Dict[str, float], Decoded]:
    config = ctx.config
    return evaluation.evaluate(model, ctx.task, split.examples, split.features, ctx.strategy,
                               config.eval_batch_size, DecodeOptions.from_settings(config),
                               config.pad_to_max_length)


def finetune_once(ctx: Context, learning_rate: float, seed: int) -> RunResult:
    """Trains one model with this learning rate and seed (finetune.driver) and evaluates it."""
    config, strategy, log = ctx.config, ctx.strategy, ctx.log
    options = TrainOptions.from_config(config, learning_rate, seed)
    schedule = plan_schedule(len(ctx.data.train.features), options)
    with strategy.scope():
        model = build_model(ctx, seed)
    result = RunResult(learning_rate, seed, {}, train_steps=schedule.total_steps)
    # One TensorBoard folder per run of the sweep, with train/ and eval/ inside.
    tensorboard = TensorBoardLog(os.path.join(config.output_dir, "tensorboard",
                                              f"lr{learning_rate:g}_seed{seed}"))
    last_evaluation = None  # (step, metrics, decoded) of the latest epoch

    def evaluate_epoch(step: int) -> Dict[str, float]:
        """--eval_every_epoch: the task metric on the evaluation split after every epoch (the
        driver writes it to TensorBoard's eval/); the last epoch's is the run's evaluation."""
        nonlocal last_evaluation
        metrics, decoded = evaluate_split(ctx, model, ctx.data.eval)
        last_evaluation = (step, metrics, decoded)
        result.epoch_metrics.append({"step": step, **metrics})
        log(f"  epoch {len(result.epoch_metrics)}: {metrics}")
        return {f"val_{k}": float(v) for k, v in metrics.items()}

    try:
        trained = train(model, ctx.task, ctx.data.train.features, options, strategy,
                        log=log, label=f"fine-tune lr {learning_rate:g} seed {seed}",
                        tensorboard=tensorboard,
                        validate=evaluate_epoch if config.eval_every_epoch else None)
    except TrainingDiverged as error:
        tensorboard.close()
        log(str(error))
        result.diverged = str(error)
        return result
    result.final_loss = trained.final_loss
    result.train_seconds = trained.train_seconds
    result.seconds_per_step = trained.seconds_per_step
    if last_evaluation is not None and last_evaluation[0] == schedule.total_steps:
        _, result.metrics, result.decoded = last_evaluation
    else:
        result.metrics, result.decoded = evaluate_split(ctx, model, ctx.data.eval)
        tensorboard.write("eval", schedule.total_steps, result.metrics)
        if config.eval_every_epoch:
            result.epoch_metrics.append({"step": schedule.total_steps, **result.metrics})
    tensorboard.close()
    result.model = model
    log(f"lr {learning_rate:g} seed {seed}: {ctx.task.main_metric} "
        f"{result.metrics[ctx.task.main_metric]:.4f}  ({result.seconds_per_step:.3f} s/step)")
    return result


# ---- the sweep ----------------------------------------------------------------------------------

def summarize_runs(runs: Sequence[RunResult], main_metric: str,
                   learning_rates: Sequence[float]) -> Dict[str, Any]:
    """Per learning rate: mean and std (sample std, ddof=1; 0 for one run) of the main metric
    over seeds, and the best seed. The chosen learning rate has the highest mean (ties: the
    one listed first). Returns {"per_learning_rate": {...}, "chosen_learning_rate", "mean",
    "std", "selected_seed"}."""
    per_lr: Dict[str, Dict[str, Any]] = {}
    best_lr, best_mean = None, -math.inf
    diverged = [r for r in runs if r.diverged]
    for lr in learning_rates:
        # A diverged run has no score: its learning rate is judged on the runs that finished,
        # and one whose runs all diverged is never chosen.
        mine = [r for r in runs if r.learning_rate == lr and not r.diverged]
        if not mine:
            if any(r.learning_rate == lr for r in diverged):
                per_lr[repr(lr)] = {"learning_rate": lr, "diverged": True, "runs": 0}
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
        if diverged:
            raise ValueError(
                f"every run diverged ({len(diverged)} of {len(runs)}): "
                f"{diverged[0].diverged}")
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
    The chief holds output_dir's lock throughout (tfmodels.folder_lock): a second process
    fine-tuning into the same folder is refused, naming this one.
    """
    strategy = strategy or make_strategy(config)
    writes = is_chief(strategy)
    with (exclusive_folder(config.output_dir, "fine-tuning", log) if writes
          else contextlib.nullcontext()):
        return _sweep(config, run_fn, strategy, log)


def _sweep(config: FinetuneConfig, run_fn: RunFn, strategy: tf.distribute.Strategy,
           log: Callable[[str], None]) -> Dict[str, Any]:
    earlier = [name for name in FINETUNE_OUTPUTS
               if os.path.exists(os.path.join(config.output_dir, name))]
    if earlier and not config.overwrite_output_dir:
        raise ValueError(f"output_dir {config.output_dir} already holds fine-tuning results "
                         f"({', '.join(earlier)}); pass --overwrite_output_dir to replace them, "
                         f"or use another folder")
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
            if run.diverged:
                continue
            kept = best_per_lr.get(lr)
            if kept is None or run.metrics[task.main_metric] > kept.metrics[task.main_metric]:
                if kept is not None:
                    kept.model = kept.decoded = None
                best_per_lr[lr] = run
            else:
                run.model = run.decoded = None
    summary = summarize_runs(runs, task.main_metric, learning_rates)
    selected = best_per_lr[summary["chosen_learning_rate"]]
    diverged = [r for r in runs if r.diverged]
    if diverged:
        log(f"{len(diverged)} of {len(runs)} runs diverged and were not considered: " + ", ".join(
            f"lr {r.learning_rate:g} seed {r.seed}" for r in diverged))
    baseline = evaluation.constant_answer_scores(task, data.eval.examples,
                                                 DecodeOptions.from_settings(config))

    os.makedirs(config.output_dir, exist_ok=True)
    threshold = selected.metrics.get("null_threshold", config.null_threshold)
    files: Dict[str, List[str]] = {}
    predictions_dir = os.path.join(config.output_dir, "predictions")
    if selected.decoded is not None:
        files["eval"] = task.kind.write_predictions(
            task, data.eval.examples, selected.decoded, os.path.join(predictions_dir, "eval"),
            threshold)
    model_path = None
    if selected.model is not None:
        if data.test is not None:
            decoded = evaluation.predict_and_decode(
                selected.model, task, data.test.examples, data.test.features, strategy,
                config.eval_batch_size, DecodeOptions.from_settings(config),
                config.pad_to_max_length)
            files["test"] = task.kind.write_predictions(
                task, data.test.examples, decoded, os.path.join(predictions_dir, "test"),
                threshold)
        if config.save_model:
            model_path = save_model(_with_preprocessing(selected.model, task, pretrained, config),
                                    os.path.join(config.output_dir, "model.keras"))
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
        "task": task.name, "kind": task.kind.name, "model": config.model,
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
        "diverged_runs": len(diverged),
        # What answering every example the same (the commonest label; the mean target for
        # regression) scores with the task's metric: the line a model must beat.
        "constant_answer": baseline,
        "eval_source": data.eval_source,
        "num_train_examples": len(data.train.examples),
        "num_eval_examples": len(data.eval.examples),
        "num_test_examples": len(data.test.examples) if data.test else 0,
        "prediction_files": files, "model_file": model_path, "export": export_path,
        "precision": chosen.as_dict(),
        # The vocabulary files as resolved (beside the checkpoint unless given): what export
        # and predict read to serve model.keras without tokenizer flags.
        "config": {**dataclasses.asdict(config), **resolved_tokenizer_flags(config),
                   "learning_rates": list(learning_rates),
                   "warmup_fraction": config.resolved_warmup_fraction},
    }
    results = json_safe(results)
    prediction_files.atomic_write_text(os.path.join(config.output_dir, "results.json"),
                                       json.dumps(results, indent=2) + "\n")
    log(f"{task.name}: chosen lr {summary['chosen_learning_rate']:g}, {task.main_metric} "
        f"{summary['mean']:.4f} +- {summary['std']:.4f} over {len(config.seeds)} seed(s)"
        f"{baseline_note(task.main_metric, summary['mean'], baseline)}; "
        f"wrote {config.output_dir}/results.json")
    return results


def baseline_note(main_metric: str, score: float, baseline: Dict[str, float]) -> str:
    """', the constant answer scores X' (and that the model does not beat it, when so)."""
    if main_metric not in baseline:
        return ""
    line = baseline[main_metric]
    verdict = " (the model does not beat it)" if score <= line + 1e-9 else ""
    return f"; the constant answer scores {line:.4f}{verdict}"


def _with_preprocessing(model, task, pretrained, config: FinetuneConfig) -> keras.Model:
    """The selected TaskModel wrapped as its task's Python API class (finetune.api), which
    saves the tokenizer's files and the lengths inside model.keras."""
    from finetune.api import finetuned_model_for
    wrapped = finetuned_model_for(
        model, task, pretrained.tokenizer, config.seq_length, lower_case=config.lower_case,
        lm_weight=config.lm_weight, doc_stride=config.doc_stride,
        max_query_length=config.max_query_length, max_answer_length=config.max_answer_length)
    return model if wrapped is None else wrapped


def save_model(model: keras.Model, path: str) -> str:
    """model.save to a temp name in the same folder, then rename (never a half-written file)."""
    with atomic_path(path, suffix=".keras") as temp:
        model.save(temp)
    return path
