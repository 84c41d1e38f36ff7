"""GPT-1's zero-shot heuristics (Radford et al. 2018, Section 5, Figure 2 right): how well the
pretrained language model alone does a task, before any fine-tuning.

  CoLA          the sentence's average token log-probability under the LM, thresholded:
                acceptable when above. Reported at a label-free fixed threshold (the median
                score, or --cola_threshold) and at the best threshold (an oracle upper bound).
  SST-2         append " very" and compare log p("positive") with log p("negative"); also
                the accuracy with the margin thresholded at its median (label-free; needed
                when the two words split into different numbers of BPE tokens).
  RACE-style    the answer with the highest average token log-probability conditioned on
  (Story Cloze) document + question.
  Winograd /    substitute each candidate for the pronoun; the candidate under which the rest
  DPRD          of the sentence (after the substitution) is most likely wins ("partial
                scoring", Trinh & Le 2018, which GPT-1 follows).

Everything reduces to one primitive, `LmScorer.log_probs(contexts, continuations)`: the
log-probability of each continuation token given the context and the continuation before it.
Sequences are right-padded in batches and the causal mask hides padding from real positions,
so a sequence's scores do not depend on what else is in its batch.

`run_zero_shot(ZeroShotConfig(...))` runs them over the shared files; the binary is
tools/zero_shot.py. `checkpoint`: a `.keras` GptLanguageModel (or any saved model holding a
GPT-1 decoder), an OpenAI GPT-1 `.npy` release or a Hugging Face openai-gpt folder.
"""
from __future__ import annotations

import dataclasses
import os
import json
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

SST2_CUE, SST2_WORDS = " very", (" negative", " positive")   # label 0, label 1


class LmScorer:
    """Continuation log-probabilities under a GPT-1 language model.

    lm: a GptLanguageModel or LstmLanguageModel (its `token_log_probs`); tokenizer:
    GptBpeTokenizer.
    batch_size: sequences per forward pass (the [b, s, 40k] logits dominate memory).
    max_length: longest sequence scored (default: the model's positions); longer ones lose
    context tokens from the left. prefix: text prepended to every context (GPT-1 has no BOS
    token, so with an empty context the first continuation token is not scored).
    """

    def __init__(self, lm, tokenizer, batch_size: int = 8, max_length: Optional[int] = None,
                 prefix: str = ""):
        self.lm, self.tokenizer, self.batch_size = lm, tokenizer, batch_size
        self.max_length = max_length or lm.config.max_positions
        from tfmodels.preprocessing import TextPacker
        self.packer = TextPacker(tokenizer, "gpt", self.max_length)
        self.prefix_ids = self.encode([prefix])[0] if prefix else []
        spec = tf.TensorSpec([None, None], tf.int32)

        @tf.function(input_signature=[spec, spec])
        def token_log_probs(ids, mask):
            # [b, s-1]: log p(x_t | x_<t), the scoring LanguageModel.score also runs.
            return lm.token_log_probs({"input_ids": ids, "input_mask": mask})

        self._token_log_probs = token_log_probs

    def encode(self, texts: Sequence[str]) -> List[List[int]]:
        """Ids through the in-graph tokenizer fine-tuning and exports use (the one text path)."""
        return self.packer.tokenize(list(texts)).to_list()

    def log_probs(self, contexts: Sequence[Sequence[int]],
                  continuations: Sequence[Sequence[int]]) -> List[np.ndarray]:
        """For each (context ids, continuation ids): float64 [len(scored continuation)],
        log p(c_i | prefix + context + c_<i). Every continuation token is scored unless there
        is no token before it (empty prefix and context: the first one is skipped)."""
        if len(contexts) != len(continuations):
            raise ValueError(f"{len(contexts)} contexts but {len(continuations)} continuations")
        rows = []
        for i, (context, continuation) in enumerate(zip(contexts, continuations)):
            if not continuation:
                raise ValueError(f"pair {i}: the continuation has no tokens")
            context = list(self.prefix_ids) + list(context)
            if len(continuation) + 1 > self.max_length:
                raise ValueError(f"pair {i}: a {len(continuation)}-token continuation does not "
                                 f"fit max_length {self.max_length} with any context")
            context = context[max(0, len(context) + len(continuation) - self.max_length):]
            rows.append((context + list(continuation), max(len(context), 1)))
        out: List[Optional[np.ndarray]] = [None] * len(rows)
        order = sorted(range(len(rows)), key=lambda r: len(rows[r][0]))  # less padding
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            width = max(len(rows[r][0]) for r in chunk)
            ids = np.zeros((len(chunk), width), np.int32)
            mask = np.zeros((len(chunk), width), np.int32)
            for j, r in enumerate(chunk):
                ids[j, :len(rows[r][0])] = rows[r][0]
                mask[j, :len(rows[r][0])] = 1
            scores = self._token_log_probs(ids, mask).numpy().astype(np.float64)
            for j, r in enumerate(chunk):
                tokens, first = rows[r]
                out[r] = scores[j, first - 1:len(tokens) - 1]  # targets first..len-1
        return out  # type: ignore[return-value]

    def text_log_probs(self, contexts: Sequence[str], continuations: Sequence[str]
                       ) -> List[np.ndarray]:
        """`log_probs` on texts; context and continuation are tokenized separately (split at a
        word boundary this gives the tokens of the whole text)."""
        ids = self.encode(list(contexts) + list(continuations))
        return self.log_probs(ids[:len(contexts)], ids[len(contexts):])


# ---- the heuristics ------------------------------------------------------------------------

def sentence_scores(scorer: LmScorer, sentences: Sequence[str]) -> np.ndarray:
    """CoLA: average token log-probability of each sentence."""
    ids = scorer.encode(sentences)
    scored = scorer.log_probs([[]] * len(ids), ids)
    for sentence, lp in zip(sentences, scored):
        if not len(lp):
            raise ValueError(f"{sentence!r} has no token to score: with no prefix the first "
                             "token is only context (set a prefix)")
    return np.array([lp.mean() for lp in scored])


def mcc_at(scores: Sequence[float], labels: Sequence[int], threshold: float) -> float:
    """Matthews correlation of `score > threshold` (acceptable = 1) against labels."""
    from finetune.metrics import matthews_corrcoef
    return matthews_corrcoef(np.asarray(labels), (np.asarray(scores) > threshold).astype(int))["mcc"]


def best_threshold_mcc(scores: Sequence[float], labels: Sequence[int]) -> Tuple[float, float]:
    """(best MCC, threshold) over every cut of the sorted scores (O(n log n)): predicting the
    top k as acceptable for k = 0..n; the threshold is the midpoint below the k-th score."""
    s, y = np.asarray(scores, np.float64), np.asarray(labels).astype(int)
    if s.shape != y.shape or s.ndim != 1 or not len(s):
        raise ValueError(f"need 1-D scores and labels of one length, got {s.shape}, {y.shape}")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    # Only cut between distinct scores: equal scores get the same prediction.
    cuts = np.r_[0, np.flatnonzero(s[1:] != s[:-1]) + 1, len(s)]
    tp = np.r_[0, np.cumsum(y)][cuts].astype(np.float64)
    fp = cuts - tp
    pos = float(y.sum())
    fn, tn = pos - tp, (len(y) - pos) - fp
    denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    mcc = np.where(denom > 0, (tp * tn - fp * fn) / np.where(denom > 0, denom, 1.0), 0.0)
    k = int(mcc.argmax())
    cut = cuts[k]
    if cut == 0:
        threshold = s[0] + 1.0
    elif cut == len(s):
        threshold = s[-1] - 1.0
    else:
        threshold = (s[cut - 1] + s[cut]) / 2.0
    return float(mcc[k]), float(threshold)


def sst2_margins(scorer: LmScorer, sentences: Sequence[str]) -> np.ndarray:
    """SST-2: log p(" positive" | s + " very") - log p(" negative" | s + " very"); > 0 is
    predicted positive (label 1)."""
    contexts = [s.rstrip() + SST2_CUE for s in sentences]
    neg = scorer.text_log_probs(contexts, [SST2_WORDS[0]] * len(contexts))
    pos = scorer.text_log_probs(contexts, [SST2_WORDS[1]] * len(contexts))
    return np.array([p.sum() - n.sum() for p, n in zip(pos, neg)])


def choice_scores(scorer: LmScorer, contexts: Sequence[str],
                  candidates: Sequence[Sequence[str]]) -> List[np.ndarray]:
    """RACE / Story Cloze: the average log-probability of each candidate given its context
    (document + question). Returns one array of candidate scores per example."""
    pairs = [(c, cand) for c, cands in zip(contexts, candidates) for cand in cands]
    flat = scorer.text_log_probs([p[0] for p in pairs], [" " + p[1].strip() for p in pairs])
    out, k = [], 0
    for cands in candidates:
        out.append(np.array([lp.mean() for lp in flat[k:k + len(cands)]]))
        k += len(cands)
    return out


@dataclasses.dataclass(frozen=True)
class WinogradExample:
    """A Winograd / DPRD sentence: the pronoun at sentence[start:end] refers to one candidate."""

    sentence: str
    pronoun_start: int
    pronoun_end: int
    candidates: Tuple[str, ...]
    label: Optional[int] = None

    def substituted(self, candidate: str) -> Tuple[str, str]:
        """(text up to and including the candidate, the rest of the sentence after it)."""
        return self.sentence[:self.pronoun_start] + candidate, self.sentence[self.pronoun_end:]


def winograd_scores(scorer: LmScorer, examples: Sequence[WinogradExample]) -> List[np.ndarray]:
    """Partial scoring: for each candidate, log p(rest | text before the pronoun + candidate),
    summed over the rest's tokens (the same tokens for every candidate)."""
    contexts, rests = [], []
    for ex in examples:
        if not ex.sentence[ex.pronoun_end:].strip():
            raise ValueError(f"{ex.sentence!r}: nothing follows the pronoun to score")
        for cand in ex.candidates:
            context, rest = ex.substituted(cand)
            contexts.append(context)
            rests.append(rest)
    flat = scorer.text_log_probs(contexts, rests)
    out, k = [], 0
    for ex in examples:
        out.append(np.array([lp.sum() for lp in flat[k:k + len(ex.candidates)]]))
        k += len(ex.candidates)
    return out


# ---- evaluation on the shared data files ----------------------------------------------------------

def evaluate_cola(scorer: LmScorer, path: str, max_examples: int = 0,
                  threshold: Optional[float] = None) -> Dict[str, float]:
    from finetune.readers.glue import GLUE_FORMATS, read_glue_tsv
    examples = read_glue_tsv(path, GLUE_FORMATS["cola"])[:max_examples or None]
    scores = sentence_scores(scorer, [ex.text_a for ex in examples])
    labels = [int(ex.label) for ex in examples]
    fixed = float(np.median(scores)) if threshold is None else threshold
    best, best_threshold = best_threshold_mcc(scores, labels)
    return {"examples": len(examples), "mcc_fixed_threshold": mcc_at(scores, labels, fixed),
            "fixed_threshold": fixed, "mcc_best_threshold": best, "best_threshold": best_threshold,
            "mean_log_prob": float(scores.mean())}


def evaluate_sst2(scorer: LmScorer, path: str, max_examples: int = 0) -> Dict[str, float]:
    from finetune.readers.glue import GLUE_FORMATS, read_glue_tsv
    examples = read_glue_tsv(path, GLUE_FORMATS["sst2"])[:max_examples or None]
    margins = sst2_margins(scorer, [ex.text_a for ex in examples])
    labels = np.array([int(ex.label) for ex in examples])
    return {"examples": len(examples), "accuracy": float(np.mean((margins > 0) == labels)),
            "predicted_positive": float(np.mean(margins > 0)),
            **median_threshold_accuracy(margins, labels)}


def median_threshold_accuracy(margins: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
    """Accuracy when the top half of the margins is called positive (label-free, like CoLA's
    fixed threshold). With the 40k vocabulary " positive" and " negative" are one token each;
    a small BPE splits " negative" in two, so its log-probability is a sum of two terms and
    the margin at 0 calls everything positive even for a random model. The median cut asks
    only whether the margin ranks the sentences by sentiment."""
    median = float(np.median(margins))
    return {"accuracy_median_threshold": float(np.mean((margins > median) == labels)),
            "median_margin": median}


def evaluate_choice(scorer: LmScorer, examples) -> Dict[str, float]:
    """ChoiceExamples (Story Cloze, RACE, SWAG): context + question conditions each ending."""
    contexts = [" ".join(p for p in (ex.context.strip(), ex.question.strip()) if p)
                for ex in examples]
    scores = choice_scores(scorer, contexts, [ex.endings for ex in examples])
    correct = [int(s.argmax()) == ex.label for s, ex in zip(scores, examples)]
    return {"examples": len(examples), "accuracy": float(np.mean(correct))}


def evaluate_story_cloze(scorer: LmScorer, path: str, max_examples: int = 0) -> Dict[str, float]:
    from finetune.readers.choice import read_story_cloze
    return evaluate_choice(scorer, read_story_cloze(path)[:max_examples or None])


def load_language_model(checkpoint: str, num_heads: int = 12):
    """A GptLanguageModel from a .keras file or an OpenAI / Hugging Face GPT-1 folder (a saved
    model holding a GPT-1 decoder, e.g. a fine-tuned one, gets the tied LM head back); the
    same for GPT-1's LSTM baseline (LstmLanguageModel; GPT-1 Figure 2 compares both)."""
    from finetune.models import as_backbone
    from tfmodels.checkpoints.formats import load_checkpoint
    from tfmodels.gpt import GptDecoder, GptLanguageModel
    from tfmodels.lstm import LstmDecoder, LstmLanguageModel
    model = load_checkpoint(checkpoint, num_heads=num_heads)
    if isinstance(model, (GptLanguageModel, LstmLanguageModel)):
        return model
    backbone = as_backbone(model)
    if isinstance(backbone, LstmDecoder):
        return LstmLanguageModel(backbone)
    if not isinstance(backbone, GptDecoder):
        raise ValueError(f"{checkpoint} holds a {type(backbone).__name__}; the zero-shot "
                         "heuristics need a GPT-1 language model")
    return GptLanguageModel(backbone)


@dataclasses.dataclass(frozen=True)
class ZeroShotConfig:
    checkpoint: str = dataclasses.field(
        default="", metadata={"help": ".keras GptLanguageModel, OpenAI .npy or HF openai-gpt "
                                      "folder."})
    bpe_encoder_file: str = dataclasses.field(
        default="", metadata={"help": "BPE encoder JSON ('' = beside the checkpoint)."})
    bpe_merges_file: str = dataclasses.field(
        default="", metadata={"help": "BPE merges ('' = beside the checkpoint)."})
    num_heads: int = dataclasses.field(
        default=12, metadata={"help": "Heads of an OpenAI .npy release."})
    data_dir: str = dataclasses.field(
        default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             os.pardir, "shared", "data"),
        metadata={"help": "Folder with glue/CoLA, glue/SST-2, storycloze (the shared data)."})
    tasks: Tuple[str, ...] = ("cola", "sst2", "story_cloze")
    max_examples: int = dataclasses.field(
        default=1000, metadata={"help": "First N examples of each file (0 = all)."})
    batch_size: int = 8
    max_length: int = 0
    prefix: str = dataclasses.field(
        default="", metadata={"help": "Text prepended to every context."})
    cola_threshold: float = dataclasses.field(
        default=float("nan"), metadata={"help": "Fixed CoLA threshold (nan = median score)."})
    output_json: str = ""


_FILES = {"cola": ("glue/CoLA/train.tsv", evaluate_cola),
          "sst2": ("glue/SST-2/train.tsv", evaluate_sst2),
          "story_cloze": ("storycloze/cloze_test_val__spring2016.csv", evaluate_story_cloze)}


def run_zero_shot(config: ZeroShotConfig, log=print) -> Dict[str, Dict[str, float]]:
    from tfmodels.checkpoints.formats import bpe_files
    from tfmodels.tokenizers.gpt_bpe import GptBpeTokenizer
    unknown = [t for t in config.tasks if t not in _FILES]
    if unknown:
        raise ValueError(f"unknown zero-shot tasks {unknown}; known: {sorted(_FILES)}")
    if not config.checkpoint:
        raise ValueError("checkpoint is required")
    files = bpe_files(config.checkpoint, config.bpe_encoder_file, config.bpe_merges_file)
    tokenizer = GptBpeTokenizer(files["encoder_file"], files["merges_file"])
    lm = load_language_model(config.checkpoint, config.num_heads)
    if tokenizer.vocab_size > lm.config.vocab_size:
        raise ValueError(f"the BPE files give {tokenizer.vocab_size} ids but the model has "
                         f"{lm.config.vocab_size} embedding rows")
    scorer = LmScorer(lm, tokenizer, config.batch_size, config.max_length or None, config.prefix)
    results = {}
    for task in config.tasks:
        path = os.path.join(config.data_dir, _FILES[task][0])
        kwargs = {}
        if task == "cola" and not np.isnan(config.cola_threshold):
            kwargs["threshold"] = config.cola_threshold
        results[task] = _FILES[task][1](scorer, path, config.max_examples, **kwargs)
        log(f"{task:12s} " + "  ".join(f"{k} {v:.4g}" for k, v in results[task].items()))
    if config.output_json:
        from finetune.predictions import atomic_write_text
        atomic_write_text(config.output_json, json.dumps(results, indent=2) + "\n")
    return results
