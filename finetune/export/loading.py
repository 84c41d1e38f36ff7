"""Loading what fine-tuning or pretraining saved, for export or in-process serving: a `.keras`
model, the task, tokenizer and lengths its run used (results.json beside it), and the two
paths tools/export_model and tools/predict take from a `.keras` file."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, Optional

from finetune.export.module import ServingModule, build_serving_module
from finetune.export.publish import export_saved_model
from tfmodels.tokenizers.loading import load_tokenizer


def load_keras_model(path: str):
    """A `.keras` file from fine-tuning (TaskModel) or pretraining (GptLanguageModel)."""
    import keras
    from finetune import models  # noqa: F401  (registers the task model classes)
    from tfmodels import bert, gpt  # noqa: F401
    if not os.path.isfile(path):
        raise ValueError(f"model file {path} does not exist")
    return keras.saving.load_model(path, compile=False)


@dataclasses.dataclass
class Source:
    """A `.keras` model and what serving it needs; empty fields are filled from the model (a
    fine-tuned model.keras carries its tokenizer and lengths), or for a bare TaskModel from
    the fine-tuning run's results.json beside it (its `config`)."""

    model_path: str
    task: str = ""                      # "" and a GptLanguageModel: the LM
    seq_length: int = 0                 # 0: the run's, else 128 (capped by the model)
    vocab_file: str = ""
    bpe_encoder_file: str = ""
    bpe_merges_file: str = ""
    lower_case: Optional[bool] = None   # None: the run's, else True
    max_query_length: int = 0           # 0: the run's, else 64
    max_answer_length: int = 0          # 0: the run's, else 30
    max_new_tokens_limit: int = 0       # the LM's generate ceiling (0: seq_length)


@dataclasses.dataclass
class Loaded:
    model: Any
    task_spec: Any                      # None for the LM
    tokenizer: Any
    seq_length: int
    max_query_length: int
    max_answer_length: int
    max_new_tokens_limit: int = 0


def run_config(model_path: str) -> Dict[str, Any]:
    """`config` of results.json beside the model (finetune.trainer writes it), or {}."""
    path = os.path.join(os.path.dirname(os.path.abspath(model_path)), "results.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f).get("config", {}) or {}
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}, line {e.lineno}: not valid JSON ({e.msg})") from None


def load_source(source: Source) -> Loaded:
    """Model, task, tokenizer and lengths of a Source (see its fields for the defaults)."""
    from finetune.api import FinetunedModel
    from finetune.models import TaskModel
    from finetune.tasks import TASKS, get_task
    model = load_keras_model(source.model_path)
    if isinstance(model, FinetunedModel):
        return _loaded_from_finetuned(model, source)
    run = run_config(source.model_path)
    task = source.task or run.get("task", "") or (
        model.name if isinstance(model, TaskModel) and model.name in TASKS else "")
    if isinstance(model, TaskModel) and not task:
        raise ValueError(f"{source.model_path}: cannot tell the task (no results.json beside "
                         "it and the model's name is not a task); pass task")
    task_spec = get_task(task) if isinstance(model, TaskModel) else None
    input_format = input_format_of(model)
    lower_case = source.lower_case if source.lower_case is not None else run.get("lower_case", True)
    tokenizer = load_tokenizer(input_format, source.vocab_file or run.get("vocab_file", ""),
                               source.bpe_encoder_file or run.get("bpe_encoder_file", ""),
                               source.bpe_merges_file or run.get("bpe_merges_file", ""),
                               bool(lower_case))
    seq_length = source.seq_length or run.get("seq_length", 0) or min(
        128, model.config.max_positions)
    return Loaded(model, task_spec, tokenizer, int(seq_length),
                  int(source.max_query_length or run.get("max_query_length", 64)),
                  int(source.max_answer_length or run.get("max_answer_length", 30)),
                  source.max_new_tokens_limit)


def _loaded_from_finetuned(model, source: Source) -> Loaded:
    """A model.keras that carries its tokenizer and lengths (finetune.api, what fine-tuning
    saves); a Source field that is set overrides the saved value."""
    from finetune.tasks import get_task
    tokenizer = model.tokenizer
    if source.vocab_file or source.bpe_encoder_file or source.bpe_merges_file \
            or source.lower_case is not None:
        lower_case = model.lower_case if source.lower_case is None else source.lower_case
        tokenizer = load_tokenizer(model.input_format, source.vocab_file,
                                   source.bpe_encoder_file, source.bpe_merges_file,
                                   bool(lower_case))
    task_spec = get_task(source.task) if source.task else model.task_spec
    return Loaded(model.task_model, task_spec, tokenizer, source.seq_length or model.seq_length,
                  source.max_query_length or model.max_query_length,
                  source.max_answer_length or model.max_answer_length,
                  source.max_new_tokens_limit)


def export_from_source(source: Source, export_base: str, model_name: str = "",
                       ids_only: bool = False, precision: str = "float32") -> str:
    """`export_saved_model` of a `.keras` file (tools/export_model); model_name defaults to
    the task (or "gpt_lm")."""
    loaded = load_source(source)
    name = model_name or (loaded.task_spec.name if loaded.task_spec is not None else "gpt_lm")
    return export_saved_model(loaded.model, loaded.task_spec, loaded.tokenizer, export_base,
                              name, loaded.seq_length, ids_only=ids_only,
                              max_query_length=loaded.max_query_length,
                              max_answer_length=loaded.max_answer_length,
                              max_new_tokens_limit=loaded.max_new_tokens_limit,
                              precision=precision)


def serving_module_from_source(source: Source) -> ServingModule:
    """The in-process serving module of a `.keras` file (tools/predict without an export)."""
    loaded = load_source(source)
    return build_serving_module(loaded.model, loaded.task_spec, loaded.tokenizer,
                                loaded.seq_length, max_query_length=loaded.max_query_length,
                                max_answer_length=loaded.max_answer_length,
                                max_new_tokens_limit=loaded.max_new_tokens_limit)


def input_format_of(model) -> str:
    """"bert" or "gpt" for a TaskModel; "gpt" for the LM."""
    from finetune.models import TaskModel, backbone_input_format
    return backbone_input_format(model) if isinstance(model, TaskModel) else "gpt"
