"""SavedModels for TF Serving: a fine-tuned task model (or the GPT-1 LM) plus its tokenizer,
exported so that raw text goes in and named, decoded predictions come out.

Text becomes model inputs through finetune.text_inputs / tfmodels.preprocessing, the in-graph
code the fine-tuning features also run, traced into the SavedModel: a client sends strings and
gets labels, answers or tags back, from exactly the rows the model was fine-tuned on. Rows are
padded only to the longest of each request (at most seq_length), so a short sentence does not
pay for seq_length positions.

Signatures (`serving_default` takes raw strings, `serving_ids` pre-tokenised int32 ids):
  kind                  serving_default inputs             outputs (both signatures unless noted)
  classification        text | text_a, text_b               class_ids, labels, probabilities
  regression (STS-B)    text_a, text_b                      score
  multiple_choice       context, question [b], endings [b,c] choice, probabilities
  span (SQuAD)          question, context                   text: answer, start, end (character
                                                            offsets into context), score;
                                                            ids: start_token, end_token, score
  token_classification  sentence (words as str.split())     text: tags [b, words] ("" padded),
                                                            num_words; ids: tag_ids, tags [b, s]
  language_model        text                                next_token_log_probs [b, V],
                                                            num_tokens; `generate` (text,
                                                            max_new_tokens, top_k, seed; optional:
                                                            temperature, top_p, num_beams,
                                                            do_sample, stop) -> token_ids, text,
                                                            num_tokens, log_prob
  every kind but the LM  `preprocess`: the same text inputs -> the model inputs serving_default
                        builds (what serving_ids takes)
serving_ids inputs: BERT input_ids, segment_ids, input_mask; GPT-1 input_ids, input_mask and
(task models) classify_position; int32 [b, (views,) w] for any width w <= seq_length, padded at
the end (the LM: exactly seq_length, which generation fills).
Its graph holds only core TensorFlow ops, so stock TF Serving serves it; `ids_only=True` exports
nothing else (and aliases it as serving_default). The raw-text signatures need the
tensorflow-text kernels in the server; `audit_ops` lists the ops that do (BUILD_NOTES.md,
"Serving: custom ops").

One concern a module:
  signatures.py  signature names; Python function -> concrete function with named inputs
  heads.py       serving heads (a task kind's `serving_head`, finetune.kinds): raw text ->
                 model inputs, model outputs -> answers
  module.py      ServingModule (the tf.Module that is saved) and building it for a model
  warmup.py      TF Serving warmup requests and the op audit
  publish.py     export_saved_model: versioned, atomic publishing; the vocabulary assets
  loading.py     a `.keras` model and its run's settings -> export or in-process serving
"""
from finetune.export.heads import Head, ServingSpec, best_span_graph
from finetune.export.loading import (Loaded, Source, export_from_source, load_keras_model,
                                     load_source, input_format_of, run_config,
                                     serving_module_from_source)
from finetune.export.module import ServingModule, build_serving_module, serving_spec
from finetune.export.publish import (EXPORT_INFO, export_saved_model, latest_version,
                                     next_version, read_export_info, write_vocab_files)
from finetune.export.signatures import (DEFAULT_SIGNATURE, GENERATE_SIGNATURE, IDS_SIGNATURE,
                                        PREPROCESS_SIGNATURE)
from finetune.export.warmup import (OPS_FILE, WARMUP_FILE, audit_ops, example_request,
                                    predict_request, read_warmup, write_warmup)

__all__ = [
    "DEFAULT_SIGNATURE", "EXPORT_INFO", "GENERATE_SIGNATURE", "IDS_SIGNATURE",
    "OPS_FILE", "PREPROCESS_SIGNATURE", "WARMUP_FILE", "Head", "Loaded",
    "ServingModule", "ServingSpec", "Source", "audit_ops", "best_span_graph",
    "build_serving_module", "example_request", "export_from_source", "export_saved_model",
    "latest_version", "load_keras_model", "load_source", "input_format_of", "next_version",
    "predict_request", "read_export_info", "read_warmup", "run_config",
    "serving_module_from_source", "serving_spec", "write_vocab_files", "write_warmup",
]
