"""Raw text -> pretraining TFRecords, for BERT (sentence pairs with NSP labels, or packed
contiguous text without; static MLM masks) and GPT (contiguous token windows).

Input text files hold one sentence per line with a blank line between documents (the
google-research/bert format); with `input_format='plain'` every non-empty line is a sentence
and blank lines still separate documents.

Work is split into chunks: each input file is cut at document boundaries into pieces of
about `chunk_bytes`, and each chunk becomes one output shard (none if it yields no
instance). The main process reads and tokenises chunks (tf-text, batched) and writes shards
(temporary file, renamed when complete); worker processes, which never import TensorFlow,
build and serialise the instances. Memory is bounded by the chunk size whatever the corpus
size; a chunk's random seed depends only on (seed, file name, chunk index), so the output
does not depend on the number of workers.

Reruns: the output folder is stamped with the settings and inputs before the first shard
(`creation_settings.json`), and every finished chunk is logged (`progress.jsonl`). A rerun
with the same settings and inputs resumes, skipping finished chunks, whatever point the
earlier run was killed at; one with other settings or inputs is refused, naming the
difference. `manifest.json` totals every chunk, earlier runs' included.

GPT windows are cut from ONE token stream over the whole corpus (documents joined by
`_delimiter_`, across chunks and files, the paper's contiguous text), so a corpus of many
short files loses nothing but the final partial window, whose size is reported.

Shard layout (`record_order`, issue 43): with pass_major (the default) a BERT shard holds
one dupe pass of its chunk's instances, shuffled, then the next, and so on (in the order
`pass_sequence` gives: the first k passes hold at least k / dupe_factor of the records);
GPT windows, which have no dupes, are shuffled within the shard. The input pipeline reads
every shard at the pace of its size, so any prefix of a run sees every text once before it
sees any twice.
chunk_mixed is the layout before issue 43 (all passes shuffled together, GPT windows in
text order), kept because it reproduces those records (every feature they had, in the
same order). Every record also
carries `doc_id` (corpus index of the document its text starts in) and `text_span`
([first, end) corpus indexes of its sentences for BERT, of its window for GPT), from
which tools/data_coverage measures what a run reads; the parsers ignore them. A folder
stamped before issue 43 counts as packing nsp_pairs, record_order chunk_mixed.

Packing (`packing`, BERT): nsp_pairs, google-research/bert's sentence pairs below, or
RoBERTa's inputs without NSP (Liu et al. 2019, section 4.2): full_sentences packs
contiguous sentences to the full max_seq_length, across documents with a [SEP] between
them; doc_sentences never crosses a document. Both cut the sentence that does not fit and
continue it in the next instance (RoBERTa keeps whole sentences, at 512 tokens; at 128
that leaves 14% of the positions empty). Their records have one segment (segment ids 0)
and no `next_sentence_labels`, so they serve --nouse_nsp pretraining only; the
pretraining input refuses them for NSP by name. There is no separate --nouse_nsp at data
creation: the packing decides whether records carry NSP labels. `short_seq_prob` applies
to nsp_pairs only.

BERT instances follow google-research/bert's `create_pretraining_data.py`: per document a
target length (shorter with probability `short_seq_prob`), chunks of sentences split into
A and B, B replaced by text from another document half of the time (NSP label 1 = random),
random front/back truncation, then 15% masking with 80/10/10. The "other document" comes from
the same chunk (a window of a few thousand documents) rather than the whole corpus, which is
what keeps memory flat.

The 80/10/10 mix is `mask_token_rate` / `random_token_rate` (the rest keep their token); the
paper's Appendix C.2 ablation (Table 8, [MASK]/same/random) is, as (mask, random) rates:
(0.8, 0.1) the default, (1.0, 0.0), (0.8, 0.2), (0.8, 0.0), (0.0, 0.8) and (0.0, 1.0).
"""
from __future__ import annotations

import collections
import concurrent.futures
import concurrent.futures.process
import dataclasses
import hashlib
import json
import multiprocessing
import os
import random
import time
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from pretraining.corpora import expand_patterns
from pretraining.example_encoding import encode_examples
from tfmodels.architectures import check_input_format
from tfmodels.config_flags import option
from tfmodels.files import atomic_write_text
from tfmodels.folder_lock import exclusive_folder

Document = List[List[int]]  # sentences of token ids


def masking_rate_problems(mask_token_rate: float, random_token_rate: float) -> List[str]:
    """What is wrong with an MLM replacement mix ([] if nothing): each rate in [0, 1] and
    their sum <= 1 (the remainder keeps the original token)."""
    problems = [f"{name} must be in [0, 1], got {rate}"
                for name, rate in (("mask_token_rate", mask_token_rate),
                                   ("random_token_rate", random_token_rate))
                if not 0.0 <= rate <= 1.0]
    if mask_token_rate + random_token_rate > 1.0 + 1e-9:
        problems.append(f"mask_token_rate + random_token_rate must be <= 1 (the rest keep "
                        f"their token), got {mask_token_rate} + {random_token_rate}")
    return problems


PACKINGS = ("nsp_pairs", "full_sentences", "doc_sentences")
RECORD_ORDERS = ("pass_major", "chunk_mixed")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    mode: str = option(
        "bert", "The records' model: bert (masked pairs) or gpt (token windows).",
        choices=("bert", "gpt"))
    vocab_file: str = option("", "bert: the WordPiece vocabulary (vocab.txt).")
    do_lower_case: bool = option(
        True, "bert: lower-case and strip accents (an uncased vocabulary).")
    bpe_encoder_file: str = option("", "gpt: the BPE encoder JSON.")
    bpe_merges_file: str = option("", "gpt: the BPE merges file.")
    input_format: str = option(
        "sentences",
        "Both read each non-empty line as one sentence (or paragraph) and a blank line as the "
        "end of a document (google-research/bert's format); any other value is refused.",
        choices=("sentences", "plain"))
    max_seq_length: int = option(128, "bert: tokens per record ([CLS] A [SEP] B [SEP]).")
    max_predictions_per_seq: int = option(
        20, "bert: most masked positions per record (at most max_seq_length).")
    masked_lm_prob: float = option(0.15, "bert: share of a record's tokens chosen for prediction.")
    mask_token_rate: float = dataclasses.field(
        default=0.8, metadata={"help": "Share of the selected tokens replaced by [MASK]."})
    random_token_rate: float = dataclasses.field(
        default=0.1, metadata={"help": "Share replaced by a random token (the rest of the "
                                       "selected tokens keep theirs)."})
    short_seq_prob: float = option(
        0.1, "bert: share of records given a shorter random target length.")
    dupe_factor: int = option(
        10, "bert: passes over the text, each with different masks and pairs.")
    packing: str = option(
        "nsp_pairs",
        "bert instances: nsp_pairs (google-research/bert: [CLS] A [SEP] B [SEP], B from "
        "another document half of the time, NSP labels) | full_sentences (RoBERTa: "
        "contiguous sentences packed to the full max_seq_length, the last one cut and "
        "continued in the next instance, a [SEP] where one document ends and the next "
        "begins; no NSP labels) | doc_sentences (the same, never crossing a document). Only "
        "nsp_pairs records serve --use_nsp pretraining.", choices=PACKINGS)
    record_order: str = option(
        "pass_major",
        "Order of the records inside a shard: pass_major (one dupe pass of the chunk's "
        "instances shuffled, then the next, ...; GPT windows shuffled), so reading all "
        "shards at an even pace sees every text once before any twice | chunk_mixed (all "
        "dupe passes shuffled together, GPT windows in text order: the layout before "
        "issue 43, kept to reproduce and measure earlier records).", choices=RECORD_ORDERS)
    whole_word_mask: bool = option(False, "bert: mask every piece of a chosen word together.")
    n_ctx: int = option(512, "gpt: tokens per window.")
    random_seed: int = option(
        12345, "Seed of pairing, masking and shuffling (each chunk gets its own).")
    chunk_bytes: int = option(
        1 << 20, "Input bytes per work unit and output shard (split at line ends).")

    def __post_init__(self):
        problems = masking_rate_problems(self.mask_token_rate, self.random_token_rate)
        if self.mode == "bert" and not 1 <= self.max_predictions_per_seq <= self.max_seq_length:
            problems.append(f"max_predictions_per_seq must be in 1..max_seq_length "
                            f"({self.max_seq_length}), got {self.max_predictions_per_seq}")
        if self.packing not in PACKINGS:
            problems.append(f"packing must be one of {', '.join(PACKINGS)}, got "
                            f"{self.packing!r}")
        if self.record_order not in RECORD_ORDERS:
            problems.append(f"record_order must be one of {', '.join(RECORD_ORDERS)}, got "
                            f"{self.record_order!r}")
        if problems:
            raise ValueError("bad data config: " + "; ".join(problems))


@dataclasses.dataclass(frozen=True)
class Chunk:
    path: str
    index: int
    start: int
    end: int

    def shard_name(self) -> str:
        stem = os.path.basename(self.path)
        digest = hashlib.sha1(os.path.abspath(self.path).encode()).hexdigest()[:8]
        return f"{stem}-{digest}-{self.index:05d}.tfrecord"


def split_into_chunks(path: str, chunk_bytes: int) -> List[Chunk]:
    """Byte ranges of `path`, each ending at a document boundary (after a blank line) once
    it exceeds `chunk_bytes`, so no document is cut in two."""
    chunks, start, index = [], 0, 0
    with open(path, "rb") as f:
        position = 0
        for line in f:
            position += len(line)
            if position - start >= chunk_bytes and not line.strip():
                chunks.append(Chunk(path, index, start, position))
                start, index = position, index + 1
        if position > start:
            chunks.append(Chunk(path, index, start, position))
    return chunks


def read_documents(chunk: Chunk, input_format: str) -> List[List[str]]:
    """The chunk's documents as lists of sentences; undecodable bytes name file and line."""
    documents, current = [], []
    with open(chunk.path, "rb") as f:
        f.seek(chunk.start)
        data = f.read(chunk.end - chunk.start)
    for offset, raw in enumerate(data.split(b"\n")):
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError as e:
            line_number = data[:sum(len(x) + 1 for x in data.split(b"\n")[:offset])].count(
                b"\n") + 1
            raise ValueError(f"{chunk.path}: invalid UTF-8 in chunk {chunk.index} (byte offset "
                             f"{chunk.start}), line {line_number} of the chunk: {e}") from None
        if line:
            current.append(line)
        elif current:
            documents.append(current)
            current = []
    if current:
        documents.append(current)
    return documents


def make_tokenizer(config: DataConfig):
    """The tokenizer for `config.mode` (TensorFlow is imported here, in the main process)."""
    from tfmodels.tokenizers.loading import load_tokenizer
    return load_tokenizer(config.mode, config.vocab_file, config.bpe_encoder_file,
                          config.bpe_merges_file, config.do_lower_case)


def tokenize_documents(documents: List[List[str]], tokenizer, mode: str) -> List[Document]:
    sentences = [s for doc in documents for s in doc]
    if mode == "bert":
        ragged = tokenizer.tokenize(sentences)
        flat = ragged.flat_values.numpy().tolist()
        splits = ragged.row_splits.numpy().tolist()
        ids = [flat[a:b] for a, b in zip(splits[:-1], splits[1:])]
    else:
        ids = tokenizer.encode(sentences)
    out, i = [], 0
    for doc in documents:
        out.append([s for s in ids[i:i + len(doc)] if s])
        i += len(doc)
    return [d for d in out if d]


def _truncate_seq_pair(tokens_a: List[int], tokens_b: List[int], max_num_tokens: int,
                       rng: random.Random) -> None:
    """google-research/bert's truncation: trim the longer, from the front or back at random."""
    while len(tokens_a) + len(tokens_b) > max_num_tokens:
        trunc = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        if rng.random() < 0.5:
            del trunc[0]
        else:
            trunc.pop()


def sentence_pair_instances(documents: List[Document], doc_index: int, config: DataConfig,
                            rng: random.Random
                            ) -> Iterator[Tuple[List[int], List[int], int, Tuple[int, int]]]:
    """(tokens_a, tokens_b, is_random_next, own sentences) for one document, as
    google-research/bert does; own sentences are the [first, end) indexes, in the document,
    of the sentences the instance takes from it (B's from a random document are not)."""
    document = documents[doc_index]
    max_num_tokens = config.max_seq_length - 3
    target_seq_length = max_num_tokens
    if rng.random() < config.short_seq_prob:
        target_seq_length = rng.randint(2, max_num_tokens)
    current_chunk: List[List[int]] = []
    current_length = 0
    chunk_start = 0  # the document's index of current_chunk[0]
    i = 0
    while i < len(document):
        segment = document[i]
        current_chunk.append(segment)
        current_length += len(segment)
        if i == len(document) - 1 or current_length >= target_seq_length:
            if current_chunk:
                a_end = rng.randint(1, len(current_chunk) - 1) if len(current_chunk) >= 2 else 1
                tokens_a = [t for s in current_chunk[:a_end] for t in s]
                tokens_b: List[int] = []
                is_random_next = len(current_chunk) == 1 or rng.random() < 0.5
                own_end = i + 1
                if is_random_next and len(documents) > 1:
                    target_b_length = target_seq_length - len(tokens_a)
                    other = doc_index
                    for _ in range(10):
                        other = rng.randint(0, len(documents) - 1)
                        if other != doc_index:
                            break
                    random_document = documents[other]
                    for sentence in random_document[rng.randint(0, len(random_document) - 1):]:
                        tokens_b.extend(sentence)
                        if len(tokens_b) >= target_b_length:
                            break
                    # The unused sentences go back for the next instance.
                    i -= len(current_chunk) - a_end
                    own_end = chunk_start + a_end
                else:
                    is_random_next = False
                    tokens_b = [t for s in current_chunk[a_end:] for t in s]
                _truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
                if tokens_a and tokens_b:
                    yield tokens_a, tokens_b, int(is_random_next), (chunk_start, own_end)
            current_chunk, current_length = [], 0
            chunk_start = i + 1
        i += 1


def packed_instances(documents: List[Document], config: DataConfig, sep_id: int,
                     ) -> Iterator[Tuple[List[int], int, Tuple[int, int]]]:
    """RoBERTa's FULL-SENTENCES / DOC-SENTENCES inputs (Liu et al. 2019, section 4.2) for a
    chunk's documents: (tokens between [CLS] and the final [SEP], the chunk's index of the
    document of the first token, [first, end) chunk indexes of the sentences that start in
    the instance).

    Sentences are taken contiguously, in text order, until the instance holds
    max_seq_length - 2 tokens. With full_sentences an instance runs on into the next
    document after a [SEP]; with doc_sentences it ends with its document (so each
    document's last one is shorter). Unlike RoBERTa at 512 tokens, the sentence that does
    not fit is cut at the instance's end and continues the next instance: at 128 tokens
    keeping whole sentences leaves 14% of the positions empty (fill 0.857 on wikipedia20m,
    BUILD_NOTES), fewer real tokens than nsp_pairs. A sentence counts in the span of the
    instance it starts in. Deterministic: dupe passes repeat the instances under fresh masks.
    """
    budget = config.max_seq_length - 2
    cross = config.packing == "full_sentences"
    tokens: List[int] = []
    first_doc, last_doc, span = 0, -1, [0, 0]
    sentence_index = 0  # the chunk's index of the current sentence
    for doc_index, document in enumerate(documents):
        if tokens and not cross:
            yield tokens, first_doc, (span[0], span[1])
            tokens = []
        for sentence in document:
            start = 0
            while start < len(sentence):
                if tokens and doc_index != last_doc:
                    # A [SEP] marks where the previous document ended; without room for
                    # it and a token the instance ends here.
                    if len(tokens) + 1 >= budget:
                        yield tokens, first_doc, (span[0], span[1])
                        tokens = []
                    else:
                        tokens.append(sep_id)
                if not tokens:
                    first_doc = doc_index
                    span = [sentence_index + (start > 0)] * 2
                take = min(budget - len(tokens), len(sentence) - start)
                tokens.extend(sentence[start:start + take])
                if start == 0:
                    span[1] = sentence_index + 1
                start += take
                last_doc = doc_index
                if len(tokens) == budget:
                    yield tokens, first_doc, (span[0], span[1])
                    tokens = []
            sentence_index += 1
    if tokens:
        yield tokens, first_doc, (span[0], span[1])


def mask_instances(input_ids: np.ndarray, lengths: np.ndarray, special: np.ndarray,
                   word_starts: Optional[np.ndarray], config: DataConfig, vocab_size: int,
                   mask_id: int, rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """Static MLM masks for a batch, vectorised: [n, seq] ids -> corrupted ids + targets.

    Each row gets min(max_predictions, max(1, round(len * masked_lm_prob))) positions
    chosen uniformly among non-special ones (whole words together when `word_starts` is
    given); `mask_token_rate` (80%) become [MASK], `random_token_rate` (10%) a random token,
    the rest stay.
    """
    n, seq = input_ids.shape
    predictions = config.max_predictions_per_seq
    selectable = ~special & (np.arange(seq)[None, :] < lengths[:, None])
    budget = np.minimum(predictions, np.maximum(1, np.round(
        (lengths - special.sum(1)) * config.masked_lm_prob).astype(np.int64)))
    if word_starts is None:
        scores = np.where(selectable, rng.random((n, seq)), 2.0)
    else:
        # One random score per word, shared by its pieces, so pieces sort together.
        word_id = np.cumsum(word_starts, axis=1)
        word_scores = rng.random((n, seq + 1))
        scores = np.where(selectable, np.take_along_axis(word_scores, word_id, 1)
                          + np.arange(seq)[None, :] * 1e-9, 2.0)
    order = np.argsort(scores, axis=1, kind="stable")
    limit = np.minimum(budget, selectable.sum(1))[:, None]
    if word_starts is None:
        chosen = np.arange(seq)[None, :] < limit
    else:
        # Take whole words in score order while they fit in the budget, so a word is never
        # cut (google-research/bert skips words that would overflow the budget).
        word_sorted = np.take_along_axis(word_id, order, 1)
        is_last = np.ones_like(word_sorted, bool)
        is_last[:, :-1] = word_sorted[:, :-1] != word_sorted[:, 1:]
        count = np.where(is_last, np.arange(1, seq + 1)[None, :], seq + 1)
        word_end_count = np.minimum.accumulate(count[:, ::-1], axis=1)[:, ::-1]
        chosen = word_end_count <= limit
    order, chosen = order[:, :predictions], chosen[:, :predictions]
    positions = np.where(chosen, order, 0)
    positions = np.sort(np.where(chosen, positions, seq), axis=1)  # ascending, padding last
    chosen = positions < seq
    positions = np.where(chosen, positions, 0)
    rows = np.arange(n)[:, None]
    targets = np.where(chosen, input_ids[rows, positions], 0)
    draw = rng.random((n, predictions))
    replacement = np.where(draw < config.mask_token_rate, mask_id,
                           np.where(draw < config.mask_token_rate + config.random_token_rate,
                                    rng.integers(0, vocab_size, (n, predictions)), targets))
    corrupted = input_ids.copy()
    # Only the chosen predictions: the padding ones (position 0) must not write back over a
    # chosen position 0.
    chosen_rows, chosen_cols = np.nonzero(chosen)
    corrupted[chosen_rows, positions[chosen]] = replacement[chosen_rows, chosen_cols]
    return {"input_ids": corrupted, "masked_lm_positions": positions,
            "masked_lm_ids": targets, "masked_lm_weights": chosen.astype(np.float32)}


def bert_records(payload: Dict, config: DataConfig, special: Dict,
                 seed: int) -> Tuple[List[bytes], int]:
    """All dupe passes of BERT instances for a chunk's documents -> (records, tokens).

    payload: {"documents": the chunk's documents, "first_document" / "first_sentence": the
    corpus-wide indexes of its first document and sentence}. Every record carries `doc_id`
    (corpus index of the document its text starts in) and `text_span` ([first, end) corpus
    indexes of the sentences it holds from that text; a random B's are not counted), which
    tools/data_coverage reads; the input pipeline's parsers ignore them.
    """
    documents = payload["documents"]
    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)
    seq = config.max_seq_length
    cls_id, sep_id = special["cls_id"], special["sep_id"]
    is_continuation = special["is_continuation"]
    sentence_starts = np.cumsum([0] + [len(d) for d in documents])
    rows, segments, labels, doc_ids, spans, passes = [], [], [], [], [], []
    for dupe_pass in range(config.dupe_factor):
        if config.packing == "nsp_pairs":
            for doc_index in range(len(documents)):
                for tokens_a, tokens_b, label, (first, end) in sentence_pair_instances(
                        documents, doc_index, config, rng):
                    rows.append([cls_id] + tokens_a + [sep_id] + tokens_b + [sep_id])
                    segments.append(len(tokens_a) + 2)
                    labels.append(label)
                    doc_ids.append(doc_index)
                    offset = sentence_starts[doc_index]
                    spans.append((offset + first, offset + end))
                    passes.append(dupe_pass)
        else:
            for tokens, doc_index, span in packed_instances(documents, config, sep_id):
                rows.append([cls_id] + tokens + [sep_id])
                segments.append(seq)  # one segment: every segment id 0
                doc_ids.append(doc_index)
                spans.append(span)
                passes.append(dupe_pass)
    n = len(rows)
    if n == 0:
        return [], 0
    lengths = np.array([len(r) for r in rows])
    input_ids = np.zeros((n, seq), np.int64)
    for i, r in enumerate(rows):
        input_ids[i, :len(r)] = r
    positions = np.arange(seq)[None, :]
    real = positions < lengths[:, None]
    segment_ids = ((positions >= np.array(segments)[:, None]) & real).astype(np.int64)
    is_special = (input_ids == cls_id) | (input_ids == sep_id)
    word_starts = None
    if config.whole_word_mask:
        word_starts = (~is_continuation[input_ids] | is_special).astype(np.int64)
    masked = mask_instances(input_ids, lengths, is_special, word_starts, config,
                            special["vocab_size"], special["mask_id"], np_rng)
    features = {"input_ids": masked["input_ids"], "input_mask": real.astype(np.int64),
                "segment_ids": segment_ids, "masked_lm_positions": masked["masked_lm_positions"],
                "masked_lm_ids": masked["masked_lm_ids"]}
    if config.packing == "nsp_pairs":
        features["next_sentence_labels"] = np.array(labels, np.int64)[:, None]
    features["doc_id"] = payload["first_document"] + np.array(doc_ids, np.int64)[:, None]
    features["text_span"] = payload["first_sentence"] + np.array(spans, np.int64)
    records = encode_examples(features, {"masked_lm_weights": masked["masked_lm_weights"]})
    return [records[i] for i in shard_order(np.array(passes), config, np_rng)], int(lengths.sum())


def shard_order(passes: np.ndarray, config: DataConfig, rng: np.random.Generator) -> np.ndarray:
    """The order a chunk's records are written in (module notes): with record_order
    pass_major, dupe passes one after the other (`pass_sequence`), each shuffled on its
    own; with chunk_mixed, all of them shuffled together (dupe passes otherwise sit in
    order)."""
    if config.record_order == "chunk_mixed":
        return rng.permutation(len(passes))
    sizes = np.bincount(passes, minlength=config.dupe_factor)
    return np.concatenate([np.flatnonzero(passes == p)[rng.permutation(sizes[p])]
                           for p in pass_sequence(sizes)])


def pass_sequence(sizes: Sequence[int]) -> List[int]:
    """The order of a shard's dupe passes, given their records: the first k passes hold at
    least k / len(sizes) of the records, for every k, by as little as the greedy choice
    allows (the smallest pass that keeps the bound).

    Pass sizes differ (short_seq_prob draws a document's target length once per pass, and a
    short target cuts the whole document into many records: in 12 chunks of wikipedia20m
    the largest pass held 10-42% more records than the smallest, at dupe 5, length 128). A
    reader that has taken a share x <= k / dupe_factor of a shard's records must still be
    within its first k passes, so that no text is read k + 1 times; passes in creation order
    broke that (a third read of some texts at 1.82 passes). Largest first keeps the bound
    too, but front-loads the passes of short records: in the first 36% of wikipedia20m's
    shards (a 16,000-step run of 32) it left 4.4% fewer real tokens per record than the
    average, this order 2.0%."""
    total, order, held = sum(sizes), [], 0
    remaining = list(range(len(sizes)))
    for k in range(1, len(sizes) + 1):
        # The largest remaining pass always keeps the bound (it is at least their mean).
        keeps = [p for p in remaining if (held + sizes[p]) * len(sizes) >= k * total]
        chosen = min(keeps, key=lambda p: (sizes[p], p))
        order.append(chosen)
        remaining.remove(chosen)
        held += sizes[chosen]
    return order


def gpt_stream(documents: List[Document], delimiter_id: int,
               first_document: int = 0) -> Tuple[List[int], List[int]]:
    """A chunk's documents as one token stream, each document followed by `_delimiter_`,
    and the corpus index of the document of each token."""
    stream: List[int] = []
    owners: List[int] = []
    for index, doc in enumerate(documents):
        start = len(stream)
        for sentence in doc:
            stream.extend(sentence)
        stream.append(delimiter_id)
        owners.extend([first_document + index] * (len(stream) - start))
    return stream, owners


def gpt_windows(stream: List[int], n_ctx: int) -> Tuple[np.ndarray, List[int]]:
    """(complete n_ctx windows [n, n_ctx], the tokens left over for the next chunk)."""
    n = len(stream) // n_ctx
    windows = np.array(stream[:n * n_ctx], np.int64).reshape(n, n_ctx)
    return windows, stream[n * n_ctx:]


def gpt_records(payload: Dict, config: DataConfig, seed: int) -> Tuple[List[bytes], int]:
    """Token windows -> (records, tokens). payload: {"windows": [n, n_ctx], "doc_ids": the
    corpus index of the document each window starts in, "first_window": the corpus index
    of the first window}. Each record carries `doc_id` and `text_span` ([w, w + 1): the
    window's corpus index; windows have no dupes) for tools/data_coverage."""
    windows = payload["windows"]
    if not len(windows):
        return [], 0
    n = len(windows)
    records = encode_examples({
        "input_ids": windows, "doc_id": np.asarray(payload["doc_ids"], np.int64)[:, None],
        "text_span": payload["first_window"] + np.stack([np.arange(n), np.arange(1, n + 1)],
                                                        axis=1)})
    if config.record_order == "pass_major":
        # Windows in text order would let a reader that takes a prefix of every shard see
        # only the first documents of each chunk.
        records = [records[i] for i in np.random.default_rng(seed).permutation(n)]
    return records, int(windows.size)


def chunk_seed(seed: int, chunk: Chunk) -> int:
    key = f"{seed}:{os.path.basename(chunk.path)}:{chunk.index}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little")


def write_atomically(path: str, records: List[bytes]) -> None:
    # Not tfmodels.files.atomic_path: a shard's temp name is `<shard>.tmp`, which a resumed run
    # recognises (and removes) as a shard an interrupted run left half-written.
    import tensorflow as tf
    temp = path + ".tmp"
    try:
        with tf.io.TFRecordWriter(temp) as writer:
            for record in records:
                writer.write(record)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise


def write_json_atomically(path: str, value) -> None:
    atomic_write_text(path, json.dumps(value, indent=2))


def build_records(args) -> Tuple[List[bytes], int]:
    """Worker: a chunk's tokenised documents (BERT) or windows (GPT) -> serialised records
    (pure numpy / python, so workers start in a fraction of a second: they never import
    TensorFlow)."""
    payload, config, seed, special = args
    if config.mode == "gpt":
        return gpt_records(payload, config, seed)
    return bert_records(payload, config, special, seed)


def bounded_imap(pool, function, jobs: Iterator, max_in_flight: int) -> Iterator:
    """`pool.map` in order that holds at most `max_in_flight` jobs: mapping the whole iterator
    at once would tokenise the whole corpus ahead of the workers and make memory grow with it."""
    in_flight: collections.deque = collections.deque()
    try:
        for job in jobs:
            in_flight.append(pool.submit(function, job))
            if len(in_flight) >= max_in_flight:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()
    except concurrent.futures.process.BrokenProcessPool as e:
        # multiprocessing.Pool would start a new worker, which dies the same way, forever.
        raise RuntimeError(
            "a data-creation worker died before returning its chunk: killed (out of memory?), "
            "or the script that called create_pretraining_data ran it again when the worker "
            "imported it (put the call under `if __name__ == \"__main__\":`)") from e


def _special_ids(tokenizer, config: DataConfig) -> Dict:
    if config.mode == "gpt":
        return {"delimiter_id": tokenizer.delimiter_id}
    return {"cls_id": tokenizer.cls_id, "sep_id": tokenizer.sep_id, "mask_id": tokenizer.mask_id,
            "vocab_size": tokenizer.vocab_size,
            "is_continuation": np.array([t.startswith("##") for t in tokenizer.vocab])}


# ----------------------------------------------------------------------------------------
# The output folder's state: what makes a rerun resume safely, or refuse.
#
#   creation_settings.json  the settings and inputs (path, size, SHA-256 of the content),
#                           written before any shard: a rerun with other settings or inputs
#                           is refused, naming the difference, whatever state the earlier
#                           run died in. The hash is streamed over every input at each start
#                           (about 1 s per GB): an input edited in place at the same size is
#                           caught, which path and size alone missed.
#   .lock                   held while a run writes the folder (tfmodels.folder_lock): a
#                           second process creating data into it is refused.
#   progress.jsonl          one line per finished chunk (its shard, records, bytes, and for
#                           GPT the tokens carried into the next chunk), appended after the
#                           shard is renamed into place: a chunk counts as done only if its
#                           line is complete and its shard has the recorded size.
#   manifest.json           written at the end: totals over all chunks (earlier runs'
#                           included) and every shard with its input, byte size and records.

SETTINGS_FILE = "creation_settings.json"
PROGRESS_FILE = "progress.jsonl"
MANIFEST_FILE = "manifest.json"


def file_sha256(path: str, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(block), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _input_identity(files: Sequence[str]) -> List[Dict]:
    return [{"path": os.path.abspath(f), "bytes": os.path.getsize(f), "sha256": file_sha256(f)}
            for f in files]


# Settings added by issue 43, as records made before it had them: a stamp without them
# describes those records.
SETTINGS_BEFORE_ISSUE_43 = {"packing": "nsp_pairs", "record_order": "chunk_mixed"}


def settings_differences(previous: Dict, current: Dict) -> List[str]:
    """Human-readable differences between two settings stamps ([] if the same)."""
    problems = []
    old_config = {**SETTINGS_BEFORE_ISSUE_43, **previous.get("config", {})}
    new_config = current["config"]
    for key in sorted(set(old_config) | set(new_config)):
        if old_config.get(key) != new_config.get(key):
            problems.append(f"{key} was {old_config.get(key)!r}, now {new_config.get(key)!r}")
    old_inputs = {i["path"]: i for i in previous.get("inputs", [])}
    new_inputs = {i["path"]: i for i in current["inputs"]}
    added = [p for p in new_inputs if p not in old_inputs]
    removed = [p for p in old_inputs if p not in new_inputs]
    resized = []
    for path in (p for p in new_inputs if p in old_inputs):
        old, new = old_inputs[path], new_inputs[path]
        if old["bytes"] != new["bytes"]:
            resized.append(f"{path} ({old['bytes']} -> {new['bytes']} bytes)")
        elif old.get("sha256") and new.get("sha256") and old["sha256"] != new["sha256"]:
            # Stamps written before content hashes have none: their size is all there is.
            resized.append(f"{path} (same size, other content: sha256 {old['sha256'][:12]} "
                           f"-> {new['sha256'][:12]})")
    for label, paths in (("inputs not in the earlier run", added),
                         ("inputs of the earlier run missing now", removed),
                         ("inputs changed since the earlier run", resized)):
        if paths:
            shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3
                                            else "")
            problems.append(f"{label}: {shown}")
    return problems


def _claim_output_dir(output_dir: str, stamp: Dict, log) -> None:
    """Writes the settings stamp, or checks it against an existing one (module notes)."""
    settings_path = os.path.join(output_dir, SETTINGS_FILE)
    manifest_path = os.path.join(output_dir, MANIFEST_FILE)
    if os.path.exists(settings_path):
        with open(settings_path, encoding="utf-8") as f:
            previous = json.load(f)
        differences = settings_differences(previous, stamp)
        if differences:
            raise ValueError(f"{output_dir} holds records made with other settings or inputs "
                             f"({'; '.join(differences)}); use a new --output_dir, or delete "
                             f"this one to start over")
        return
    ours = [name for name in os.listdir(output_dir)
            if name.endswith((".tfrecord", ".tfrecord.tmp")) or name == PROGRESS_FILE]
    if os.path.exists(manifest_path):
        # Written before settings stamps existed: its shards are rewritten (same names) if
        # it describes the same settings and inputs, refused otherwise.
        with open(manifest_path, encoding="utf-8") as f:
            legacy = json.load(f)
        legacy_stamp = {"config": legacy.get("config", {}),
                        "inputs": [{"path": os.path.abspath(p),
                                    "bytes": os.path.getsize(p) if os.path.exists(p) else -1}
                                   for p in legacy.get("inputs", [])]}
        differences = settings_differences(legacy_stamp, stamp)
        if differences:
            raise ValueError(f"{output_dir} holds records made with other settings or inputs "
                             f"({'; '.join(differences)}); use a new --output_dir")
        log(f"{output_dir}: made before settings stamps; rewriting its shards")
    elif ours:
        raise ValueError(f"{output_dir} holds {len(ours)} record or progress files but no "
                         f"{SETTINGS_FILE}, so their settings are unknown; use a new "
                         f"--output_dir")
    write_json_atomically(settings_path, stamp)


def _finished_chunks(output_dir: str) -> Dict[str, Dict]:
    """{shard name: progress entry} of chunks whose entry is complete and whose shard (if it
    has records) is on disk with the recorded size; anything else is redone."""
    path = os.path.join(output_dir, PROGRESS_FILE)
    finished: Dict[str, Dict] = {}
    if not os.path.exists(path):
        return finished
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill: that chunk is redone
            shard = os.path.join(output_dir, entry["shard"])
            if entry["records"] == 0 or (os.path.exists(shard)
                                         and os.path.getsize(shard) == entry["bytes"]):
                finished[entry["shard"]] = entry
    return finished


def _append_progress(output_dir: str, entry: Dict) -> None:
    with open(os.path.join(output_dir, PROGRESS_FILE), "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()
        os.fsync(f.fileno())


def create_pretraining_data(input_files: Sequence[str], output_dir: str, config: DataConfig,
                            num_workers: int = 1, log=print) -> Dict[str, float]:
    """Writes one shard per input chunk under `output_dir` and a manifest.json summary.

    GPT windows run over the whole corpus as one stream (documents joined by `_delimiter_`,
    across chunks and files): only the final partial window is dropped. A chunk with no
    complete instance writes no shard. Raises ValueError when nothing at all comes out.
    """
    check_input_format(config.mode, what="mode")
    files = expand_patterns(input_files)
    directories = [f for f in files if os.path.isdir(f)]
    if directories:
        raise ValueError(f"input files must be text files; these are folders: {directories}")
    tokenizer = make_tokenizer(config)  # fails fast on bad vocabulary files
    special = _special_ids(tokenizer, config)
    with exclusive_folder(output_dir, "data creation", log):
        return _create(files, output_dir, config, tokenizer, special, num_workers, log)


def _create(files: List[str], output_dir: str, config: DataConfig, tokenizer, special: Dict,
            num_workers: int, log) -> Dict[str, float]:
    settings = dataclasses.asdict(config)
    _claim_output_dir(output_dir, {"config": settings, "inputs": _input_identity(files)}, log)
    for name in os.listdir(output_dir):  # a killed run's half-written shards
        if name.endswith(".tfrecord.tmp"):
            os.remove(os.path.join(output_dir, name))
    chunks = [c for path in files for c in split_into_chunks(path, config.chunk_bytes)]
    finished = _finished_chunks(output_dir)
    pending = [c for c in chunks if c.shard_name() not in finished]
    start = time.time()
    skipped = len(chunks) - len(pending)
    if skipped:
        log(f"resuming: {skipped} of {len(chunks)} chunks already written")
    # What each job's chunk told the parent (documents, GPT carry), in job order.
    chunk_notes: collections.deque = collections.deque()

    def jobs():
        # The parent reads and tokenises (tf-text, batched) and, for GPT, cuts the running
        # token stream into windows; workers build the records. The corpus-wide indexes of
        # documents, sentences and windows count on over finished chunks (their progress
        # entries), so a resumed run numbers them as an uninterrupted one.
        carry: List[int] = []
        carry_owners: List[int] = []
        documents_before = sentences_before = windows_before = 0
        for chunk in chunks:
            entry = finished.get(chunk.shard_name())
            if entry is not None:
                carry, carry_owners = entry.get("carry", []), entry.get("carry_owners", [])
                documents_before += entry["documents"]
                sentences_before += entry["sentences"]
                windows_before += entry["records"]
                continue
            documents = tokenize_documents(read_documents(chunk, config.input_format),
                                           tokenizer, config.mode)
            sentences = sum(len(d) for d in documents)
            if config.mode == "gpt":
                stream, owners = gpt_stream(documents, special["delimiter_id"],
                                            documents_before)
                stream, owners = carry + stream, carry_owners + owners
                windows, carry = gpt_windows(stream, config.n_ctx)
                carry_owners = owners[len(stream) - len(carry):]
                payload = {"windows": windows, "doc_ids": owners[:len(windows) * config.n_ctx:
                                                                 config.n_ctx],
                           "first_window": windows_before}
                windows_before += len(windows)
            else:
                payload = {"documents": documents, "first_document": documents_before,
                           "first_sentence": sentences_before}
            chunk_notes.append({"documents": len(documents), "sentences": sentences,
                                "carry": list(carry), "carry_owners": list(carry_owners)})
            documents_before += len(documents)
            sentences_before += sentences
            yield payload, config, chunk_seed(config.random_seed, chunk), special

    # spawn, not fork: the parent may hold TensorFlow's threads. An executor, not a Pool: a
    # worker that dies makes it fail instead of being replaced.
    pool = (concurrent.futures.ProcessPoolExecutor(
        num_workers, mp_context=multiprocessing.get_context("spawn")) if num_workers > 1
            else None)
    results = (bounded_imap(pool, build_records, jobs(), 2 * num_workers) if pool
               else map(build_records, jobs()))
    from tfmodels.progress import Progress
    bar = Progress(len(pending), "data creation", unit="chunks")
    try:
        for done, (chunk, (records, tokens)) in enumerate(zip(pending, results), 1):
            notes = chunk_notes.popleft()
            shard = os.path.join(output_dir, chunk.shard_name())
            if records:
                write_atomically(shard, records)
            elif os.path.exists(shard):
                os.remove(shard)  # left by an earlier run of this chunk
            entry = {"shard": chunk.shard_name(), "input": os.path.abspath(chunk.path),
                     "chunk": chunk.index, "byte_range": [chunk.start, chunk.end],
                     "records": len(records), "tokens": tokens,
                     "bytes": os.path.getsize(shard) if records else 0,
                     "documents": notes["documents"], "sentences": notes["sentences"]}
            if config.mode == "gpt":
                entry["carry"] = notes["carry"]
                entry["carry_owners"] = notes["carry_owners"]
            _append_progress(output_dir, entry)
            finished[entry["shard"]] = entry
            log(f"[{done}/{len(pending)}] {chunk.shard_name()}: {len(records)} instances, "
                f"{time.time() - start:.1f} s")
            bar.update(done, instances=sum(e["records"] for e in finished.values()))
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    entries = [finished[c.shard_name()] for c in chunks]
    documents_per_input: Dict[str, int] = {os.path.abspath(f): 0 for f in files}
    for entry in entries:
        documents_per_input[entry["input"]] += entry["documents"]
    empty_inputs = [f for f in files if documents_per_input[os.path.abspath(f)] == 0]
    if empty_inputs:
        log(f"warning: {len(empty_inputs)} input file(s) hold no text: "
            + ", ".join(empty_inputs[:10]) + (" ..." if len(empty_inputs) > 10 else ""))
    dropped = len(entries[-1].get("carry", [])) if entries and config.mode == "gpt" else 0
    totals = {"documents": sum(e["documents"] for e in entries),
              "sentences": sum(e["sentences"] for e in entries),
              "instances": sum(e["records"] for e in entries),
              "tokens": sum(e["tokens"] for e in entries),
              "shards": sum(1 for e in entries if e["records"]), "chunks": len(chunks),
              "skipped": skipped, "seconds": time.time() - start}
    if config.mode == "gpt":
        totals["dropped_tokens"] = dropped  # the final partial window
    if totals["instances"] == 0:
        unit = (f"the corpus holds {dropped} tokens, fewer than one n_ctx={config.n_ctx} "
                f"window" if config.mode == "gpt" else
                "no document gives a sentence pair (BERT needs documents of 2+ sentences "
                "or long sentences)")
        raise ValueError(f"no pretraining instances from {len(files)} input file(s) "
                         f"({totals['documents']} documents): {unit}")
    totals["instances_per_second"] = totals["instances"] / max(totals["seconds"], 1e-9)
    shards = [{"file": e["shard"], "input": e["input"], "chunk": e["chunk"],
               "records": e["records"], "bytes": e["bytes"], "tokens": e["tokens"]}
              for e in entries if e["records"]]
    write_json_atomically(os.path.join(output_dir, MANIFEST_FILE),
                          {"config": settings, "inputs": files, "empty_inputs": empty_inputs,
                           "totals": totals, "shards": shards})
    dropped_note = ""
    if config.mode == "gpt":
        dropped_note = (f", the last {dropped} tokens (a partial {config.n_ctx}-token window) "
                        f"dropped" if dropped else ", no partial window left over")
    log(f"done: {totals['documents']} documents, {totals['instances']} instances in "
        f"{totals['shards']} shards, {totals['tokens']} tokens{dropped_note}, "
        f"{totals['seconds']:.1f} s ({totals['instances_per_second']:.0f} instances/s)")
    return totals
