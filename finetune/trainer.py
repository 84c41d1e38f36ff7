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
decode function each (finetune.evaluation's `DECODERS`): argmax classes, a regression scalar,
SQuAD spans (`predict_answers` + official EM/F1, the v2.0 null threshold tuned on dev), NER
word tags (first sub-token + entity F1), multiple-choice argmax.

The settings are `FinetuneConfig` (finetune.config), the splits finetune.data's, the losses
finetune.losses'; this module loads the checkpoint and tokenizer, runs, sweeps and writes.

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

from finetune import freezing
from finetune import predictions as prediction_files
from finetune.config import BACKBONES, FinetuneConfig
from finetune.data import Split, TaskData, load_task_data, train_dataset
from finetune.evaluation import DECODERS, Decoded, score, write_predictions
from finetune.losses import task_loss
from finetune.models import as_backbone, backbone_architecture, build_task_model
from finetune.tasks import TaskSpec, get_task
from tfmodels import configs, precision, training
from tfmodels.files import atomic_path, json_safe
from tfmodels.checkpoints.formats import (FORMAT_ARCHITECTURE, bpe_files,
                                         detect_checkpoint_format, load_checkpoint,
                                         wordpiece_vocab_file)
from tfmodels.optimization import create_optimizer
from tfmodels.progress import Progress
from tfmodels.tokenizers.loading import load_tokenizer
from tfmodels.training import TrainStep

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
    results = json_safe(results)
    prediction_files.atomic_write_text(os.path.join(config.output_dir, "results.json"),
                                       json.dumps(results, indent=2) + "\n")
    log(f"{task.name}: chosen lr {summary['chosen_learning_rate']:g}, {task.main_metric} "
        f"{summary['mean']:.4f} +- {summary['std']:.4f} over {len(config.seeds)} seed(s); "
        f"wrote {config.output_dir}/results.json")
    return results


def save_model(model: keras.Model, path: str) -> str:
    """model.save to a temp name in the same folder, then rename (never a half-written file)."""
    with atomic_path(path, suffix=".keras") as temp:
        model.save(temp)
    return path
