"""`--help` for every binary: the binary's own flags, grouped, with their help, defaults and
allowed values (absl's `--help` lists only flags defined in the `__main__` module, which ours
are not, and `--helpfull` mixes in TensorFlow's and absl's own).

FLAG_GROUPS names each flag's group once for every binary: a flag name means one thing across
the project (`--seq_length` is always data, `--mixed_precision` always runtime). A binary
whose flag of the same name means something else passes an override to
`tfmodels.cli.run_binary` (`bert-gpt-predict`'s `--top_k` samples; fine-tuning's trains the top
k layers). A flag missing here prints under "ungrouped", which tests/test_cli_help.py refuses.
"""
from __future__ import annotations

import textwrap
from typing import Dict, Iterable, List, Mapping, Optional

from absl import flags

GROUPS = ("model", "data", "training", "evaluation", "generation", "output", "runtime")

_NAMES_BY_GROUP = {
    "model": (
        "model", "model_config", "init_checkpoint", "vocab_file", "bpe_encoder_file",
        "bpe_merges_file", "lower_case", "vocab_size", "num_heads", "transfer_layers",
        "feature_layers", "bilstm_layers", "bilstm_units", "classifier_dropout", "objective",
        "use_nsp", "gpt_config", "saved_model", "keras_model", "from_format", "to_format",
        "task", "fetch"),
    "data": (
        "data_dir", "data_source", "tfds_data_dir", "input_files", "input_format", "input",
        "seq_length", "max_seq_length", "max_query_length", "doc_stride", "max_train_examples",
        "holdout_fraction", "holdout_before_cap", "pad_to_max_length", "mode", "n_ctx",
        "dupe_factor", "short_seq_prob", "masked_lm_prob", "max_predictions_per_seq",
        "mask_token_rate", "random_token_rate", "whole_word_mask", "whole_word_masking",
        "dynamic_masking", "do_lower_case", "chunk_bytes", "random_seed", "shuffle_buffer",
        "kind", "min_frequency", "num_merges", "train_examples", "packing", "record_order"),
    "training": (
        "learning_rates", "learning_rate", "gpt_learning_rate", "epochs", "train_steps",
        "bert_steps", "gpt_steps", "steps", "train_batch_size", "global_batch_size",
        "gradient_accumulation_steps", "recovery_max_trials", "recovery_lr_factor",
        "warmup_fraction", "warmup_steps", "weight_decay",
        "adam_epsilon", "beta_2", "clip_norm", "decay", "optimizer", "lm_weight", "loss",
        "freezing", "top_k", "unfreeze_layers_per_stage", "unfreeze_steps_per_stage", "seeds",
        "seed"),
    "evaluation": (
        "eval_batch_size", "eval_every_epoch", "eval_every", "eval_batches",
        "eval_input_files", "max_eval_examples", "n_best_size", "max_answer_length",
        "null_threshold", "tune_null_threshold", "predict_test", "min_accuracy", "batch_size",
        "signature", "top_tokens"),
    "generation": (
        "max_new_tokens", "temperature", "top_p", "num_beams", "stop", "do_sample"),
    "output": (
        "output_dir", "output", "model_dir", "export_dir", "export_base", "model_name",
        "save_model", "overwrite_output_dir", "keep_checkpoints", "checkpoint_every",
        "log_every", "ids_only", "max_new_tokens_limit", "serving_precision", "json"),
    "runtime": (
        "mixed_precision", "jit_compile", "distribution_strategy", "strategy", "tpu",
        "num_cpu_devices", "num_workers", "deterministic", "verbose_errors"),
}
FLAG_GROUPS: Dict[str, str] = {name: group for group, names in _NAMES_BY_GROUP.items()
                               for name in names}
assert len(FLAG_GROUPS) == sum(map(len, _NAMES_BY_GROUP.values())), "a flag in two groups"

UNGROUPED = "ungrouped"
# A flag whose help starts with this is a renamed one the binary refuses: listed apart.
RENAMED_PREFIX = "Renamed"


def _default_text(flag: flags.Flag) -> str:
    if flag.default is None:
        return "none"
    if isinstance(flag.default, bool):
        return "true" if flag.default else "false"
    if isinstance(flag.default, (list, tuple)):
        return ",".join(map(str, flag.default)) or "''"
    text = str(flag.default)
    return text if text else "''"


def describe(flag: flags.Flag) -> str:
    """One flag's help entry: the name line, then the wrapped help text with its default and,
    for a fixed set, the allowed values."""
    name = f"--[no]{flag.name}" if flag.boolean else f"--{flag.name}"
    details = [f"default: {_default_text(flag)}"]
    values = getattr(flag.parser, "enum_values", None)
    text = flag.help.strip()
    if values:
        details.insert(0, "one of: " + " | ".join(v if v else "''" for v in values))
        # absl's enum flags prefix their help with "<a|b|c>: "; the values are listed above.
        prefix = f"<{'|'.join(values)}>: "
        text = text[len(prefix):] if text.startswith(prefix) else text
    elif not flag.boolean:
        details.append(flag.flag_type())
    body = f"{text} ({'; '.join(details)})"
    return "\n".join([f"  {name}"] + textwrap.wrap(body, width=92, initial_indent="      ",
                                                   subsequent_indent="      "))


def grouped(names: Iterable[str],
            overrides: Optional[Mapping[str, str]] = None) -> Dict[str, List[str]]:
    """{group: flag names} in GROUPS order (UNGROUPED last), names kept in definition order."""
    table = dict(FLAG_GROUPS, **(overrides or {}))
    result: Dict[str, List[str]] = {group: [] for group in GROUPS + (UNGROUPED,)}
    for name in names:
        result[table.get(name, UNGROUPED)].append(name)
    return {group: members for group, members in result.items() if members}


def format_help(doc: str, names: Iterable[str], flag_values=flags.FLAGS,
                overrides: Optional[Mapping[str, str]] = None) -> str:
    """The binary's `--help`: its docstring, then its own flags by group."""
    names = list(names)
    renamed = [n for n in names if flag_values[n].help.startswith(RENAMED_PREFIX)]
    lines = [doc.strip(), ""] if doc and doc.strip() else []
    for group, members in grouped([n for n in names if n not in renamed], overrides).items():
        lines.append(f"{group} flags:")
        lines += [describe(flag_values[name]) for name in members]
        lines.append("")
    if renamed:
        lines.append("renamed flags (refused, with their new name): " +
                     ", ".join(f"--{n}" for n in renamed))
        lines.append("")
    lines.append("--verbosity=0 (or -v 0) shows TensorFlow's start-up and INFO logs; --helpfull "
                 "lists every flag, TensorFlow's and absl's included.")
    return "\n".join(lines) + "\n"
