"""The serving module: a tf.Module holding the model, its tokenizer and the task kind's head,
whose `serving_signatures` are what gets exported (and what tools/predict calls in-process for
a `.keras` model).

Bad requests: bytes that are not UTF-8 are replaced by U+FFFD (then dropped by BERT's
normaliser); an empty string is packed like any text ([CLS] [SEP] / start classify) and gets a
prediction; a batch of zero returns zero rows; long text is truncated to seq_length; a wrong
input name is refused by the signature binding (TF Serving: INVALID_ARGUMENT). The LM signatures
refuse an empty text with "text has no tokens" (there is no position to predict from).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict

import tensorflow as tf

from finetune.export.heads import MAX_NUM_BEAMS, Head, ServingSpec, real_lengths
from finetune.export.signatures import (DEFAULT_SIGNATURE, IDS_SIGNATURE, PREPROCESS_SIGNATURE,
                                        concrete, with_defaults)
from tfmodels.preprocessing import TextPacker, sanitize_text


class ServingModule(tf.Module):
    """Model + tokenizer + the per-kind head; `serving_signatures` are what gets exported (and what
    tools/predict calls directly for a `.keras` model)."""

    def __init__(self, model, head: Head, tokenizer=None, ids_only: bool = False):
        super().__init__(name="serving")
        self.model = model
        self.head = head
        self.ids_only = ids_only
        self.packer = None if ids_only else TextPacker(
            tokenizer, head.spec.input_format, head.spec.seq_length, head.spec.pad_to_max_length)
        if tokenizer is not None and head.spec.input_format == "gpt":
            # id -> text piece for decoding generated ids, padded to the model's vocabulary.
            pieces = [tokenizer.decoder[i] + ("</w>" if i >= tokenizer.bpe_vocab_size else "")
                      for i in range(tokenizer.vocab_size)]
            pieces += [""] * max(0, head.spec.vocab_size - len(pieces))
            self._pieces = tf.constant(pieces)
        self.serving_signatures = self._build_signatures()

    def _run(self, inputs):
        return self.model(dict(inputs), training=False)

    def serve_ids(self, inputs):
        inputs = {k: tf.cast(v, tf.int32) for k, v in inputs.items()}
        return self.head.decode(self._run(inputs), inputs)

    def serve_text(self, texts):
        texts = {k: sanitize_text(v) for k, v in texts.items()}
        inputs, state = self.head.encode(self.packer, texts)
        return self.head.decode_text(self._run(inputs), inputs, state)

    def preprocess(self, texts):
        """The model inputs serving_default builds from raw text (no model call): what a
        client of serving_ids would send, and what tests compare with the training features."""
        texts = {k: sanitize_text(v) for k, v in texts.items()}
        return self.head.encode(self.packer, texts)[0]

    def generate(self, request):
        """max_new_tokens tokens after each text: greedy, sampled, or by beam search; a full
        window drops its first token. No KV cache: one decoder pass per token (the LM output
        only at the last position).

        Decoding (transformers' `generate` conventions):
        - sampling is on when do_sample is true or any sampling option is away from its "off"
          value (top_k > 1, top_p < 1, temperature != 1); else decoding is greedy (num_beams 1)
          or beam search (num_beams > 1), both deterministic.
        - sampling: logits / temperature, then keep the top_k best (0: all), then the smallest
          set whose probability reaches top_p (nucleus), then one stateless draw per row seeded
          by (seed, step): the same seed gives the same text wherever this graph runs.
        - beam search: num_beams beams per text folded into the batch, ranked by total
          log-probability (no length penalty); a finished beam keeps its score and competes on.
        - stop: strings that end a row's generation once its generated text contains one;
          `token_ids` keep the tokens up to the one that completed it (-1 after), `text` is cut
          just before the stop string. The loop ends when every row has finished.
        Outputs: token_ids [b, max_new_tokens] (-1 past a row's end), num_tokens [b], text [b],
        log_prob [b] (the model's total log-probability of the kept tokens, temperature 1).

        Bad values fail the request with a message: max_new_tokens outside
        0..spec.max_new_tokens_limit (one request cannot hold the server for longer than the
        export allows), temperature <= 0, top_p outside (0, 1], top_k < 0, num_beams outside
        1..MAX_NUM_BEAMS, beam search with sampling options, an empty stop string. A batch of
        no texts returns no rows."""
        seq = self.head.spec.seq_length
        sampling = request["do_sample"] | (request["top_k"] > 1) | (request["top_p"] < 1.0) \
            | (request["temperature"] != 1.0)
        # Everything below reads the checked values: a bad one fails with its message first.
        with tf.control_dependencies(generate_checks(request, self.head.spec, sampling)):
            request = {k: tf.identity(v) for k, v in request.items()}
            sampling = tf.identity(sampling)
        asked, top_k, seed = request["max_new_tokens"], request["top_k"], request["seed"]
        temperature, top_p = request["temperature"], request["top_p"]
        num_beams, stops = request["num_beams"], request["stop"]
        inputs, _ = self.head.encode(self.packer, {"text": sanitize_text(request["text"])})
        batch = tf.shape(inputs["input_ids"])[0]
        rows = batch * num_beams
        # Beams folded into the batch: row r is beam r % num_beams of text r // num_beams.
        ids, mask, lengths = (tf.repeat(x, num_beams, axis=0) for x in (
            inputs["input_ids"], inputs["input_mask"], real_lengths(inputs)))
        vocab = tf.shape(self._pieces)[0]
        row_ids = tf.range(rows)
        # Every beam starts as the prompt: only the first may extend it at the first step.
        scores = tf.tile(tf.concat([[0.0], tf.fill([num_beams - 1], -float("inf"))], 0),
                         [batch])
        tokens = tf.fill([rows, asked], -1)
        finished = tf.zeros([rows], tf.bool)
        # No texts, no model call (it would run on an empty batch).
        steps = tf.where(batch > 0, asked, 0)
        stop_pattern = stop_regex(stops)
        # A finished row continues only as itself: token 0 (not kept), its score unchanged.
        stay = tf.where(tf.range(vocab) == 0, 0.0, -float("inf"))

        def step(t, ids, mask, lengths, tokens, scores, finished):
            logits = self.model.next_token_logits({"input_ids": ids, "input_mask": mask},
                                                  lengths)
            log_probs = tf.where(finished[:, None], stay[None], tf.nn.log_softmax(logits))

            def sample():
                filtered = sampling_logits(logits, temperature, top_k, top_p)
                token = tf.random.stateless_categorical(
                    filtered, 1, seed=tf.stack([seed, t]), dtype=tf.int32)[:, 0]
                token = tf.where(finished, 0, token)
                picked = tf.gather(log_probs, token[:, None], batch_dims=1)[:, 0]
                return row_ids, token, scores + picked

            def beam_search():  # greedy is its one-beam case
                candidates = tf.reshape(scores[:, None] + log_probs, [batch, -1])
                best, index = tf.math.top_k(candidates, k=num_beams)
                parent = tf.range(batch)[:, None] * num_beams + index // vocab
                return (tf.reshape(parent, [-1]), tf.reshape(index % vocab, [-1]),
                        tf.reshape(best, [-1]))

            parent, token, scores = tf.cond(sampling, sample, beam_search)
            ids, mask, lengths, tokens, finished = (
                tf.gather(x, parent) for x in (ids, mask, lengths, tokens, finished))
            full = lengths >= seq
            ids = tf.where(full[:, None], tf.roll(ids, -1, axis=1), ids)
            lengths = tf.minimum(lengths, seq - 1)
            at = tf.stack([row_ids, lengths], axis=1)
            ids = tf.tensor_scatter_nd_update(ids, at, token)
            mask = tf.tensor_scatter_nd_update(mask, at, tf.ones_like(token))
            tokens = tf.tensor_scatter_nd_update(
                tokens, tf.stack([row_ids, tf.fill([rows], t)], axis=1),
                tf.where(finished, -1, token))
            finished = finished | tf.cond(
                tf.size(stops) > 0,
                lambda: tf.strings.regex_full_match(self._text(tokens[:, :t + 1]),
                                                    "(?s).*" + stop_pattern + ".*"),
                lambda: tf.zeros([rows], tf.bool))
            return t + 1, ids, mask, lengths + 1, tokens, scores, finished

        _, _, _, _, tokens, scores, finished = tf.while_loop(
            lambda t, *state: (t < steps) & ~tf.reduce_all(state[-1]), step,
            (tf.constant(0), ids, mask, lengths, tokens, scores, finished))
        # Beams stay sorted by score (top_k), so each text's best is its first beam.
        best = tf.range(batch) * num_beams
        tokens, scores = tf.gather(tokens, best), tf.gather(scores, best)
        text = self._text(tokens)
        text = tf.cond(tf.size(stops) > 0,
                       lambda: tf.strings.regex_replace(text, "(?s)" + stop_pattern + ".*", "",
                                                        replace_global=False),
                       lambda: text)
        return {"token_ids": tokens, "text": tf.strings.strip(text),
                "num_tokens": tf.reduce_sum(tf.cast(tokens >= 0, tf.int32), axis=1),
                "log_prob": scores}

    def _text(self, tokens):
        """Generated ids [b, n] (-1: none) -> their text, unstripped (each `</w>` a space)."""
        pieces = tf.where(tokens >= 0, tf.gather(self._pieces, tf.maximum(tokens, 0)), "")
        return tf.strings.regex_replace(tf.strings.reduce_join(pieces, axis=1), "</w>", " ")

    def export_signatures(self) -> Dict[str, Any]:
        """What tf.saved_model.save gets: `serving_signatures`, those with optional inputs
        wrapped so that the SignatureDef records their defaults."""
        defaults = self.head.signature_defaults()
        return {name: with_defaults(fn, defaults[name]) if name in defaults else fn
                for name, fn in self.serving_signatures.items()}

    def _build_signatures(self) -> Dict[str, Any]:
        ids = concrete(self.serve_ids, self.head.ids_inputs())
        if self.ids_only:
            return {DEFAULT_SIGNATURE: ids, IDS_SIGNATURE: ids}
        return {DEFAULT_SIGNATURE: concrete(self.serve_text, self.head.text_inputs),
                IDS_SIGNATURE: ids,
                PREPROCESS_SIGNATURE: concrete(self.preprocess, self.head.text_inputs),
                **self.head.extra_signatures(self)}


def generate_checks(request, spec: ServingSpec, sampling) -> list:
    """The `generate` request's values checked in the graph (the API checks them first with
    the same words)."""
    limit = spec.max_new_tokens_limit
    asked, top_k, temperature = request["max_new_tokens"], request["top_k"], request["temperature"]
    top_p, num_beams = request["top_p"], request["num_beams"]
    check = lambda ok, message: tf.debugging.assert_equal(ok, True, message=message)
    return [
        check((asked >= 0) & (asked <= limit),
              f"max_new_tokens must be in 0..{limit} (this export's max_new_tokens_limit)"),
        check((temperature > 0) & tf.math.is_finite(temperature),
              "temperature must be > 0 (1: the model's distribution)"),
        check((top_p > 0) & (top_p <= 1), "top_p must be in (0, 1] (1: off)"),
        check(top_k >= 0, "top_k must be >= 0 (0: off)"),
        check((num_beams >= 1) & (num_beams <= MAX_NUM_BEAMS),
              f"num_beams must be in 1..{MAX_NUM_BEAMS}"),
        check(~(sampling & (num_beams > 1)),
              "num_beams > 1 is beam search, which does not sample: leave do_sample false, "
              "top_k <= 1, top_p 1 and temperature 1"),
        check(tf.reduce_all(tf.strings.length(request["stop"]) > 0),
              "a stop string is empty (it would stop before the first token)"),
    ]


def sampling_logits(logits, temperature, top_k, top_p):
    """float32 [b, V] logits -> the same with every token sampling may not draw at -inf:
    divided by temperature, then outside the top_k (0: off), then outside the nucleus (the
    smallest set of best tokens whose probability reaches top_p; 1: off). Ties with the last
    kept value are kept."""
    logits = logits / temperature
    k = tf.minimum(top_k, tf.shape(logits)[-1])

    def keep_top_k(x):
        kth = tf.math.top_k(x, k=k).values[:, -1:]
        return tf.where(x < kth, -float("inf"), x)

    def keep_nucleus(x):
        ordered = tf.sort(x, axis=-1, direction="DESCENDING")
        before = tf.math.cumsum(tf.nn.softmax(ordered, axis=-1), axis=-1, exclusive=True)
        # The best token is always kept; each next one while the mass before it is < top_p.
        cutoff = tf.reduce_min(tf.where(before < top_p, ordered, float("inf")), axis=-1,
                               keepdims=True)
        return tf.where(x < cutoff, -float("inf"), x)

    logits = tf.cond(k > 0, lambda: keep_top_k(logits), lambda: logits)
    return tf.cond(top_p < 1.0, lambda: keep_nucleus(logits), lambda: logits)


def stop_regex(stops):
    """An RE2 group matching any of the stop strings literally (ASCII punctuation escaped as
    RE2's QuoteMeta does)."""
    quoted = tf.strings.regex_replace(stops, r"([\x00-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f])",
                                      r"\\\1")
    return "(?:" + tf.strings.reduce_join(quoted, separator="|") + ")"


def serving_spec(task_model, task_spec, seq_length: int, max_query_length: int = 64,
                 max_answer_length: int = 30, max_new_tokens_limit: int = 0) -> ServingSpec:
    """The ServingSpec of a task model (task_spec: finetune.tasks.TaskSpec) or of a
    GptLanguageModel or LstmLanguageModel (GPT-1's LSTM baseline; task_spec None).
    max_new_tokens_limit: the LM's ceiling on one generate request (0: seq_length, the window
    the model reads)."""
    from finetune import kinds
    from finetune.models import TaskModel, backbone_input_format
    from tfmodels.gpt import GptLanguageModel
    from tfmodels.lstm import LstmLanguageModel

    if isinstance(task_model, (GptLanguageModel, LstmLanguageModel)):
        kind, input_format, task = kinds.LANGUAGE_MODEL, "gpt", "language_model"
    elif isinstance(task_model, TaskModel):
        if task_spec is None:
            raise ValueError("a task model needs its task_spec (finetune.tasks.get_task)")
        kind, input_format, task = task_spec.kind, backbone_input_format(task_model), task_spec.name
    else:
        raise TypeError(f"expected a finetune TaskModel, a GptLanguageModel or an "
                        f"LstmLanguageModel, got {type(task_model).__name__}")
    config = task_model.config
    if not 1 <= seq_length <= config.max_positions:
        raise ValueError(f"seq_length must be in 1..{config.max_positions} (the model's "
                         f"positions), got {seq_length}")
    if input_format not in kind.input_formats:
        raise ValueError(f"{kind.name} is a BERT task; GPT-1 has no input transform for it")
    kind.check_serving(seq_length, max_query_length)
    return ServingSpec(
        kind=kind.name, input_format=input_format, seq_length=seq_length, task=task,
        label_names=tuple(task_spec.label_names) if task_spec is not None else (),
        is_pair=bool(task_spec.is_pair) if task_spec is not None else False,
        views=kind.serving_views(task_spec, task_model),
        symmetric=bool(getattr(task_model, "symmetric", False)),
        max_query_length=max_query_length, max_answer_length=max_answer_length,
        vocab_size=config.vocab_size, max_new_tokens_limit=max_new_tokens_limit or seq_length)


def build_serving_module(task_model, task_spec, tokenizer, seq_length: int,
                         ids_only: bool = False, max_query_length: int = 64,
                         max_answer_length: int = 30, pad_to_max_length: bool = False,
                         max_new_tokens_limit: int = 0) -> ServingModule:
    """The module `export_saved_model` saves; its `serving_signatures` are callable in-process."""
    if max_new_tokens_limit < 0:
        raise ValueError(f"max_new_tokens_limit must be >= 0 (0: seq_length), got "
                         f"{max_new_tokens_limit}")
    spec = serving_spec(task_model, task_spec, seq_length, max_query_length, max_answer_length,
                        max_new_tokens_limit)
    spec = dataclasses.replace(spec, pad_to_max_length=pad_to_max_length)
    if not ids_only:
        _check_tokenizer(tokenizer, spec, task_model.config.vocab_size)
    from finetune import kinds
    head = kinds.get_kind(spec.kind).serving_head(spec)
    return ServingModule(task_model, head, tokenizer, ids_only=ids_only)


def _check_tokenizer(tokenizer, spec: ServingSpec, model_vocab: int) -> None:
    if getattr(tokenizer, "family", None) != spec.input_format:
        kind = "WordPieceTokenizer" if spec.input_format == "bert" else "GptBpeTokenizer"
        raise ValueError(f"a {spec.input_format} model serves raw text through a {kind}, got "
                         f"{type(tokenizer).__name__}")
    if tokenizer.vocab_size > model_vocab:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} ids but the model's "
                         f"embedding only {model_vocab}")
