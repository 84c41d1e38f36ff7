r"""Predictions for text files with an exported SavedModel or a `.keras` model: JSONL out.

  python -m tools.predict --saved_model=serving/sst2 --input=reviews.txt --output=preds.jsonl
  cat pairs.tsv | python -m tools.predict --saved_model=serving/rte/3 > preds.jsonl
  python -m tools.predict --keras_model=runs/sst2/model.keras --input=reviews.txt \
      --output=preds.jsonl          # no export: the same serving graph, built in-process

One example per line; the fields of a line are tab-separated, in the order of the signature's
text inputs:
  text | text_a TAB text_b | question TAB context | sentence |
  context TAB question TAB ending_1 ... TAB ending_c (multiple choice; question may be empty)
Lines are bytes: text that is not UTF-8 reaches the model as U+FFFD, as in serving.
Each output line is {"line": n, <output>: value, ...}: NER tags are cut to the sentence's
words; the LM's next-token distribution is reduced to its --top_tokens best (id, log-prob).
`--signature=generate` runs GPT-1 generation (--max_new_tokens; greedy unless --do_sample or
--temperature / --top_k / --top_p ask for sampling, seeded by --seed; --num_beams for beam search;
--stop, repeatable, ends a line's text before that string).
A progress bar goes to stderr. Malformed lines are reported (file:line, what was expected)
before anything runs; the output file is written atomically.
"""
from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import json
import sys
from typing import Any, Callable, Dict, Iterator, List, Mapping, Sequence, Tuple

import numpy as np
from absl import flags

from tfmodels.cli import run_binary
from tfmodels.files import atomic_write_text, json_safe

FLAGS = flags.FLAGS


def define_flags():
    """Flags are defined when the tool runs, not on import: tests import these functions
    next to other tools that use the same flag names."""
    flags.DEFINE_string("saved_model", "", "Export: a version folder or a model folder (latest).")
    flags.DEFINE_string("keras_model", "", "Or a .keras model: a fine-tuned model.keras "
                                           "carries its tokenizer and lengths (the flags below "
                                           "override them); a GPT-1 LM's needs its BPE files.")
    flags.DEFINE_string("task", "", ".keras: task name ('' = the model's).")
    flags.DEFINE_string("vocab_file", "", ".keras: BERT WordPiece vocab ('' = the model's).")
    flags.DEFINE_string("bpe_encoder_file", "", ".keras: GPT-1 BPE encoder ('' = the model's).")
    flags.DEFINE_string("bpe_merges_file", "", ".keras: GPT-1 BPE merges ('' = the model's).")
    flags.DEFINE_integer("seq_length", 0, ".keras: tokens per sequence (0 = the model's).")
    flags.DEFINE_string("input", "-", "Text file, one example per line ('-' = stdin).")
    flags.DEFINE_string("output", "-", "JSONL file ('-' = stdout).")
    flags.DEFINE_enum("signature", "serving_default", ["serving_default", "generate"],
                      "The export's signature to call (generate: GPT-1 LMs).")
    flags.DEFINE_integer("batch_size", 32, "Lines per call.")
    flags.DEFINE_integer("top_tokens", 10, "LM: best next tokens written per line.")
    flags.DEFINE_integer("max_new_tokens", 20, "generate: tokens to generate.")
    flags.DEFINE_integer("top_k", 0, "generate: sample from the top k (0: off; > 1 samples).")
    flags.DEFINE_integer("seed", 0, "generate: sampling seed (same seed, same text).")
    flags.DEFINE_float("temperature", 1.0, "generate: divide the logits by this (> 0; != 1 "
                                           "samples).")
    flags.DEFINE_float("top_p", 1.0, "generate: nucleus sampling mass (0, 1] (1: off; < 1 "
                                     "samples).")
    flags.DEFINE_integer("num_beams", 1, "generate: beam search with this many beams (1..16; "
                                         "takes no sampling options).")
    flags.DEFINE_boolean("do_sample", False, "generate: sample (from the whole distribution "
                                             "unless temperature / top_k / top_p say more).")
    flags.DEFINE_multi_string("stop", [], "generate: a string that ends a line's generation "
                                          "(repeatable); the text is cut before it.")

# Text inputs of each signature kind, in the order of a line's tab-separated fields.
LINE_FIELDS = (("text",), ("text_a", "text_b"), ("question", "context"), ("sentence",),
               ("context", "question", "endings"))


def line_fields(specs: Mapping[str, Any]) -> Tuple[str, ...]:
    """The field order for a signature's string inputs (name -> TensorSpec); generate's
    request-wide options (stop strings) come from flags, not lines."""
    from finetune.export.heads import GENERATE_OPTIONS
    names = {k for k, v in specs.items() if v.dtype.name == "string"} - set(GENERATE_OPTIONS)
    for fields in LINE_FIELDS:
        if set(fields) == names:
            return fields
    raise ValueError(f"signature text inputs {sorted(names)} are not one of {LINE_FIELDS} "
                     "(serving_ids takes ids, not text lines)")


def parse_lines(lines: Sequence[bytes], specs: Mapping[str, Any], where: str = "input"
                ) -> List[Dict[str, Any]]:
    """Raw lines -> one dict of fields per line; ValueError naming every malformed line."""
    fields = line_fields(specs)
    choices = specs["endings"].shape[-1] if "endings" in fields else 0
    expected = len(fields) - 1 + choices if choices else len(fields)
    rows, problems = [], []
    for n, line in enumerate(lines, 1):
        parts = line.split(b"\t") if len(fields) > 1 else [line]
        if len(parts) != expected:
            problems.append(f"{where}:{n}: {len(parts)} tab-separated fields, expected "
                            f"{expected} ({', '.join(fields[:-1] if choices else fields)}"
                            f"{f', {choices} endings' if choices else ''})")
            continue
        row = dict(zip(fields, parts))
        if choices:
            row["endings"] = parts[len(fields) - 1:]
        rows.append(row)
    if problems:
        raise ValueError(f"{len(problems)} malformed line(s): " + "; ".join(problems[:10]))
    return rows


def read_lines(path: str) -> List[bytes]:
    """Lines of a file or stdin as bytes, without their line endings."""
    stream = sys.stdin.buffer if path == "-" else open(path, "rb")
    try:
        return [line.rstrip(b"\n").rstrip(b"\r") for line in stream]
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def to_records(outputs: Mapping[str, np.ndarray], first_line: int, top_tokens: int = 10
               ) -> List[Dict[str, Any]]:
    """One JSON-ready dict per row of a batch's outputs."""
    outputs = dict(outputs)
    rows = len(next(iter(outputs.values())))
    log_probs = outputs.pop("next_token_log_probs", None)
    records = []
    for r in range(rows):
        record: Dict[str, Any] = {"line": first_line + r}
        for name, value in outputs.items():
            record[name] = json_safe(value[r])
        if "num_words" in record:
            record["tags"] = record["tags"][:record["num_words"]]
        if log_probs is not None:
            best = np.argsort(-log_probs[r], kind="stable")[:top_tokens]
            record["next_tokens"] = [[int(i), float(log_probs[r][i])] for i in best]
        records.append(record)
    return records


def predict(fn: Callable, specs: Mapping[str, Any], rows: Sequence[Dict[str, Any]],
            batch_size: int = 32, scalars: Mapping[str, Any] = (), top_tokens: int = 10,
            progress: bool = True) -> Iterator[Dict[str, Any]]:
    """Runs `fn` (a signature) on parsed rows in batches; yields one record per row, in input
    order. Rows are batched by length (the export pads a request only to its longest row), so
    one long line does not widen every batch."""
    import tensorflow as tf
    from tfmodels.progress import Progress
    bar = Progress(len(rows), "predict", unit="lines") if progress and len(rows) > batch_size \
        else None

    def length(row):
        return sum(len(v) if isinstance(v, (str, bytes)) else sum(map(len, v))
                   for v in row.values())

    order = sorted(range(len(rows)), key=lambda i: length(rows[i]))
    records: List[Dict[str, Any]] = [None] * len(rows)
    for start in range(0, len(rows), batch_size):
        indices = order[start:start + batch_size]
        batch = [rows[i] for i in indices]
        inputs = {name: tf.constant([row[name] for row in batch], tf.string)
                  for name in batch[0]}
        # Request-wide options (generate's), in each input's dtype; a list is a vector (stop).
        inputs.update({k: tf.constant(v, specs[k].dtype) for k, v in dict(scalars).items()
                       if k in specs})
        outputs = {k: v.numpy() for k, v in fn(**inputs).items()}
        for i, record in zip(indices, to_records(outputs, 0, top_tokens)):
            record["line"] = i + 1
            records[i] = record
        if bar is not None:
            bar.update(start + len(batch))
    yield from records


def load_signature(saved_model: str = "", keras_model: str = "", signature: str =
                   "serving_default", **source) -> Tuple[Callable, Dict[str, Any]]:
    """(callable, input specs) of an export's signature, or of the same signature built
    in-process from a `.keras` model (source: finetune.export.Source fields)."""
    import tensorflow as tf
    from finetune import export
    if bool(saved_model) == bool(keras_model):
        raise ValueError("pass exactly one of saved_model and keras_model")
    if saved_model:
        import tensorflow_text  # noqa: F401  (registers the tokenizers' ops before loading)
        loaded = tf.saved_model.load(export.latest_version(saved_model))
        functions = loaded.signatures
    else:
        functions = export.serving_module_from_source(
            export.Source(keras_model, **source)).serving_signatures
    if signature not in functions:
        raise ValueError(f"no signature {signature!r}; the model has {sorted(functions)}")
    fn = functions[signature]
    return fn, dict(fn.structured_input_signature[1])


def write_records(path: str, records: Iterator[Dict[str, Any]]) -> None:
    lines = (json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if path == "-":
        for line in lines:
            sys.stdout.write(line)
        sys.stdout.flush()
        return
    atomic_write_text(path, "".join(lines))


def check_model_files(saved_model: str, keras_model: str) -> None:
    """A damaged export or .keras file named as such, before TensorFlow trips over it."""
    from tfmodels.model_files import check_keras_file, check_saved_model
    if saved_model:
        from finetune import export
        check_saved_model(export.latest_version(saved_model))
    elif keras_model:
        check_keras_file(keras_model)


def main(argv):
    del argv
    where = "stdin" if FLAGS.input == "-" else FLAGS.input
    lines = read_lines(FLAGS.input)  # before loading the model: a wrong file fails fast
    if not lines:
        raise ValueError(f"{where}: no input lines (empty); expected one example per line")
    check_model_files(FLAGS.saved_model, FLAGS.keras_model)
    fn, specs = load_signature(
        FLAGS.saved_model, FLAGS.keras_model, FLAGS.signature,
        **({} if FLAGS.saved_model else dict(
            task=FLAGS.task, seq_length=FLAGS.seq_length, vocab_file=FLAGS.vocab_file,
            bpe_encoder_file=FLAGS.bpe_encoder_file, bpe_merges_file=FLAGS.bpe_merges_file)))
    rows = parse_lines(lines, specs, where)
    scalars = {"max_new_tokens": FLAGS.max_new_tokens, "top_k": FLAGS.top_k, "seed": FLAGS.seed,
               "temperature": FLAGS.temperature, "top_p": FLAGS.top_p,
               "num_beams": FLAGS.num_beams, "do_sample": FLAGS.do_sample,
               "stop": list(FLAGS.stop)}
    write_records(FLAGS.output, predict(fn, specs, rows, FLAGS.batch_size, scalars,
                                        FLAGS.top_tokens))


def run():
    run_binary(main, define_flags, flag_groups={"top_k": "generation", "seed": "generation"})


if __name__ == "__main__":
    run()
