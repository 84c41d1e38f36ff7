"""The heads whose training the parity harness compares, each built twice from the same weights.

A `ParityCase` holds everything one row of the harness needs:
  ours        `build_ours()` -> our task model (finetune.models.build_task_model) on a backbone
              with every dropout at 0, its variables set to the case's initial weights
  reference   `build_reference()` -> the transformers model (torch, CPU, dropout 0) holding
              the same weights; `reference_loss(module, batch)` -> its training loss, computed
              by transformers' own loss code wherever a transformers class covers the head
  ties        our variable <-> the torch parameter(s) it corresponds to, with the layout change
              (transpose, fused Q/K/V): weights go across before training and are compared after
  batches     the same N numpy batches (our feature keys) fed to both sides in the same order

Heads (HF = transformers):
  bert_classify_single / _pair   SequenceClassifier        HF BertForSequenceClassification
  bert_classify_minilm           the same on the real all-MiniLM-L6-v2 weights (pair inputs)
  bert_regression                SequenceClassifier(regression), num_labels=1 -> HF's MSE loss
  bert_span                      SpanModel; a third of the windows do not hold the answer and
                                 point at [CLS] (0), some windows are padded   HF BertForQuestionAnswering
  bert_token                     TokenClassifier; labels on first sub-tokens only, the rest -1
                                 here and -100 on the HF side   HF BertForTokenClassification
  bert_multiple_choice           MultipleChoiceModel, 4 choices   HF BertForMultipleChoice
  gpt_classify                   GPT-1 `[s] text [e]` + aux LM (lambda 0.5)
                                 HF OpenAIGPTDoubleHeadsModel (mc_token_ids = classify position,
                                 LM labels -100 on padding; its 1-unit summary projection
                                 widened to the class count: one "choice" whose scores are the
                                 classes)
  gpt_similarity                 both orders `[s] a [$] b [e]` / `[s] b [$] a [e]`, final states
                                 summed: no transformers class does this, so the reference is
                                 written here from OpenAIGPTLMHeadModel (transformer, tied LM
                                 head and LM loss) + a torch Linear on the summed states
  gpt_multiple_choice            Story Cloze, 2 choices + aux LM   HF OpenAIGPTDoubleHeadsModel

Batches are random token ids in the models' vocabularies, laid out as the fine-tuning features
lay out real text (specials, segments, right padding, labels), not tokenised text: parity of
a training step does not depend on what the ids spell.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import numpy as np

from finetune.features.tokens import IGNORE_LABEL
from finetune.models import MASKED_LOGIT, build_task_model
from finetune.tasks import get_task
from tfmodels import configs
from tfmodels.bert import BertEncoder
from tfmodels.checkpoints import hf_bert, hf_gpt
from tfmodels.checkpoints import slots as slot_lib
from tfmodels.gpt import GptDecoder

# transformers' ignore index for token labels and LM targets (torch.nn.CrossEntropyLoss).
HF_IGNORE_INDEX = -100

# Small random configs: a full 20-step comparison of one head takes seconds.
BERT_CONFIG = configs.BertConfig(
    vocab_size=128, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
    max_positions=64, hidden_dropout=0.0, attention_dropout=0.0, gelu_approximate=False)
# GPT-1 has no intermediate_size in transformers' config: its MLP is always 4 x n_embd.
GPT_CONFIG = configs.GptConfig(
    vocab_size=128 + 3, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=4 * 32,
    max_positions=32, hidden_dropout=0.0, attention_dropout=0.0)


# ---- weights across the two frameworks ----------------------------------------------------------

# How a torch tensor (or several) is laid out relative to our variable.
SAME, TRANSPOSE, QKV_KERNEL, QKV_BIAS = "same", "transpose", "qkv_kernel", "qkv_bias"


@dataclasses.dataclass
class Tie:
    """Our variable `ours` corresponds to the torch parameter(s) `torch_names` (layout below).

    SAME / TRANSPOSE: one tensor, equal or transposed (torch Linear weights are [out, in]).
    QKV_KERNEL / QKV_BIAS: our fused [hidden, 3 * hidden] Q/K/V projection is BERT's three
    separate query / key / value Linear layers."""

    name: str               # structural name, stable across rebuilds (variable paths are not)
    ours: object            # keras Variable
    torch_names: Tuple[str, ...]
    layout: str

    def to_torch(self, array: np.ndarray) -> List[np.ndarray]:
        if self.layout == SAME:
            return [array]
        if self.layout == TRANSPOSE:
            return [array.T]
        if self.layout == QKV_KERNEL:
            return [part.T for part in np.split(array, 3, axis=1)]
        return list(np.split(array, 3))

    def from_torch(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        if self.layout == SAME:
            return arrays[0]
        if self.layout == TRANSPOSE:
            return arrays[0].T
        if self.layout == QKV_KERNEL:
            return np.concatenate([a.T for a in arrays], axis=1)
        return np.concatenate(arrays)


def bert_backbone_ties(backbone: BertEncoder, prefix: str = "bert.") -> List[Tie]:
    """Our BERT encoder's variables against transformers' BertModel names, from the converter's
    own tables (tfmodels.checkpoints.hf_bert), so the harness also exercises them. The pooler
    is tied only when it trains (span and token heads freeze it; HF builds none for them)."""
    slots = slot_lib.bert_slots(backbone)
    ties = []
    for key, (hf_name, transpose) in hf_bert.EMBEDDINGS.items():
        if key.startswith("pooler/") and not backbone.pooler.trainable:
            continue
        ties.append(Tie(key, slots[key], (prefix + hf_name,), TRANSPOSE if transpose else SAME))
    for i in range(backbone.config.num_layers):
        layer = f"{prefix}encoder.layer.{i}."
        for key, (hf_name, transpose) in hf_bert.LAYER.items():
            ties.append(Tie(f"layer_{i}/{key}", slots[f"layer_{i}/{key}"], (layer + hf_name,),
                            TRANSPOSE if transpose else SAME))
        names = [layer + part for part in hf_bert.QKV]
        ties.append(Tie(f"layer_{i}/qkv/kernel", slots[f"layer_{i}/qkv/kernel"],
                        tuple(n + ".weight" for n in names), QKV_KERNEL))
        ties.append(Tie(f"layer_{i}/qkv/bias", slots[f"layer_{i}/qkv/bias"],
                        tuple(n + ".bias" for n in names), QKV_BIAS))
    return ties


def gpt_backbone_ties(decoder: GptDecoder, prefix: str = "transformer.") -> List[Tie]:
    """Our GPT-1 decoder against transformers' OpenAIGPTModel (Conv1D weights are [in, out],
    like ours; its LM head is tied to tokens_embed as ours is to the token embedding)."""
    slots = slot_lib.gpt_slots(decoder)
    ties = [Tie("token_embedding", slots["token_embedding"], (prefix + "tokens_embed.weight",),
                SAME),
            Tie("position_embedding", slots["position_embedding"],
                (prefix + "positions_embed.weight",), SAME)]
    for i in range(decoder.config.num_layers):
        for key, hf_name in hf_gpt.LAYER.items():
            ties.append(Tie(f"layer_{i}/{key}", slots[f"layer_{i}/{key}"],
                            (f"{prefix}h.{i}.{hf_name}",), SAME))
    return ties


def dense_ties(layer: keras.layers.Dense, name: str, torch_prefix: str) -> List[Tie]:
    """A head's Dense layer against a torch Linear (weight [out, in], bias)."""
    return [Tie(f"{name}/kernel", layer.kernel, (torch_prefix + ".weight",), TRANSPOSE),
            Tie(f"{name}/bias", layer.bias, (torch_prefix + ".bias",), SAME)]


# ---- the cases ----------------------------------------------------------------------------------

@dataclasses.dataclass
class ParityCase:
    """One head: both models, their ties, the batches and the recipe's per-head settings."""

    name: str
    description: str
    input_format: str                       # "bert" | "gpt": recipe and loss (task_loss)
    task: object                            # finetune.tasks.TaskSpec
    batches: List[Dict[str, np.ndarray]]
    make_backbone: Callable[..., object]    # (dtype=None) -> our backbone, dropout 0, random
                                            # or pretrained
    head_ties: Callable[[keras.Model], List[Tie]]
    make_reference: Callable[[], object]    # the torch module, random weights (overwritten)
    reference_loss: Callable[[object, Mapping[str, np.ndarray]], object]
    reference_note: str                     # which transformers class, and what was adapted
    learning_rate: float
    backbone_prefix: str = ""               # torch name prefix of the backbone ("" = default)
    initial: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    # Weights whose exact gradient is 0 (a multiple-choice classifier's bias: a softmax over
    # choices ignores a shift shared by all of them). Each side moves them by its own rounding
    # noise, amplified by Adam's normalisation, so they are held to "did not learn" instead of
    # to the weight bar.
    gradient_free: Tuple[str, ...] = ()
    seed: int = 0                           # the head's initial weights (the backbone's:
                                            # make_backbone)

    def build_ours(self, dtype: Optional[str] = None) -> keras.Model:
        """Our task model in dtype policy `dtype` (None: Keras' global one) with the case's
        initial weights (drawn on the first call)."""
        options = {"dropout": 0.0, "dtype": dtype, "seed": self.seed}
        if self.input_format == "gpt":
            options["aux_lm"] = True
        model = build_task_model(self.task, self.make_backbone(dtype=dtype), self.input_format,
                                 **options)
        ties = self.ties(model)
        if not self.initial:
            self.initial = {tie.name: np.array(tie.ours.numpy()) for tie in ties}
        for tie in ties:
            tie.ours.assign(self.initial[tie.name])
        return model

    def ties(self, model: keras.Model) -> List[Tie]:
        """Every trainable variable of `model`, tied; raises if one is missing (an untied
        variable would train on our side only and escape the comparison)."""
        backbone = model.backbone
        if self.input_format == "bert":
            ties = bert_backbone_ties(backbone, self.backbone_prefix or "bert.")
        else:
            ties = gpt_backbone_ties(backbone, self.backbone_prefix or "transformer.")
        ties += self.head_ties(model)
        tied = {id(tie.ours) for tie in ties}
        untied = [v.path for v in model.trainable_variables if id(v) not in tied]
        if untied:
            raise ValueError(f"{self.name}: variables without a reference counterpart: {untied}")
        return ties

    def build_reference(self, ties: Sequence[Tie]):
        """The torch module with the case's initial weights copied across `ties`; raises if a
        torch parameter is not tied (it would train on the reference side only)."""
        import torch
        module = self.make_reference()
        params = dict(module.named_parameters())
        with torch.no_grad():
            for tie in ties:
                for name, array in zip(tie.torch_names, tie.to_torch(self.initial[tie.name])):
                    if tuple(params[name].shape) != array.shape:
                        raise ValueError(f"{self.name}: {name} is {tuple(params[name].shape)} in "
                                         f"the reference, {array.shape} from {tie.name}")
                    params[name].copy_(torch.from_numpy(np.ascontiguousarray(array)))
        untied = sorted(set(params) - {n for tie in ties for n in tie.torch_names})
        if untied:
            raise ValueError(f"{self.name}: reference parameters without a counterpart here: "
                             f"{untied}")
        return module


def _torch_long(array):
    import torch
    return torch.as_tensor(np.asarray(array), dtype=torch.long)


# ---- BERT batches -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class BertVocab:
    size: int
    cls: int
    sep: int
    first_word: int   # ids below are specials / unused; tokens are drawn from [first_word, size)


def _bert_vocab(cfg: configs.BertConfig) -> BertVocab:
    if cfg.vocab_size == 30522:  # the uncased WordPiece vocabulary of MiniLM / bert_base
        return BertVocab(cfg.vocab_size, cls=101, sep=102, first_word=999)
    return BertVocab(cfg.vocab_size, cls=1, sep=2, first_word=5)


def _bert_row(rng, vocab: BertVocab, seq: int, len_a: int, len_b: int = 0):
    """`[CLS] a [SEP] (b [SEP])` right-padded to `seq`: ids, segments, mask."""
    ids = np.zeros(seq, np.int32)
    segments = np.zeros(seq, np.int32)
    tokens = [vocab.cls, *rng.integers(vocab.first_word, vocab.size, len_a), vocab.sep]
    if len_b:
        tokens += [*rng.integers(vocab.first_word, vocab.size, len_b), vocab.sep]
        segments[len_a + 2:len_a + len_b + 3] = 1
    ids[:len(tokens)] = tokens
    mask = (np.arange(seq) < len(tokens)).astype(np.int32)
    return ids, segments, mask


def _bert_lengths(rng, seq: int, pair: bool) -> Tuple[int, int]:
    """Random text lengths that fill between a third of `seq` and all of it."""
    budget = int(rng.integers(seq // 3, seq + 1)) - (3 if pair else 2)
    if not pair:
        return budget, 0
    len_a = int(rng.integers(1, budget))
    return len_a, budget - len_a


def bert_text_batches(rng, cfg, steps: int, batch: int, seq: int, pair: bool,
                      num_labels: int, regression: bool = False) -> List[Dict[str, np.ndarray]]:
    vocab = _bert_vocab(cfg)
    out = []
    for _ in range(steps):
        rows = [_bert_row(rng, vocab, seq, *_bert_lengths(rng, seq, pair)) for _ in range(batch)]
        ids, segments, mask = (np.stack(parts) for parts in zip(*rows))
        label = (rng.uniform(0.0, 5.0, batch).astype(np.float32) if regression
                 else rng.integers(0, num_labels, batch).astype(np.int32))
        out.append({"input_ids": ids, "segment_ids": segments, "input_mask": mask,
                    "label_ids": label})
    return out


def bert_span_batches(rng, cfg, steps: int, batch: int, seq: int) -> List[Dict[str, np.ndarray]]:
    """`[CLS] question [SEP] window [SEP]` rows; a third of the windows do not contain the
    answer and are labelled start = end = 0 ([CLS]), as google-research/bert's run_squad.py
    and transformers' SQuAD preprocessing label them; a third are padded last windows."""
    vocab = _bert_vocab(cfg)
    out = []
    for _ in range(steps):
        ids, segments, mask, starts, ends = [], [], [], [], []
        for row in range(batch):
            question = int(rng.integers(3, seq // 4))
            window = seq - question - 3 if row % 3 else int(rng.integers(4, seq - question - 3))
            i, s, m = _bert_row(rng, vocab, seq, question, window)
            if row % 3 == 1:  # the answer is outside this window
                start = end = 0
            else:
                first = question + 2  # the window's first position
                start = int(rng.integers(first, first + window))
                end = int(rng.integers(start, min(start + 4, first + window)))
            ids.append(i), segments.append(s), mask.append(m), starts.append(start), ends.append(end)
        out.append({"input_ids": np.stack(ids), "segment_ids": np.stack(segments),
                    "input_mask": np.stack(mask), "start_positions": np.array(starts, np.int32),
                    "end_positions": np.array(ends, np.int32)})
    return out


def bert_token_batches(rng, cfg, steps: int, batch: int, seq: int,
                       num_labels: int) -> List[Dict[str, np.ndarray]]:
    """`[CLS] pieces [SEP]` rows of words of 1-3 pieces; each word's tag sits on its first
    piece, every other position (later pieces, [CLS], [SEP], padding) is IGNORE_LABEL."""
    vocab = _bert_vocab(cfg)
    out = []
    for _ in range(steps):
        ids, segments, mask, labels = [], [], [], []
        for _ in range(batch):
            budget = int(rng.integers(seq // 3, seq - 1))
            label = np.full(seq, IGNORE_LABEL, np.int32)
            position = 1
            while position < budget:
                label[position] = rng.integers(0, num_labels)
                position += int(rng.integers(1, 4))
            length = min(position, budget)
            label[length + 1:] = IGNORE_LABEL
            i, s, m = _bert_row(rng, vocab, seq, length - 1)
            ids.append(i), segments.append(s), mask.append(m), labels.append(label)
        out.append({"input_ids": np.stack(ids), "segment_ids": np.stack(segments),
                    "input_mask": np.stack(mask), "label_ids": np.stack(labels)})
    return out


def bert_choice_batches(rng, cfg, steps: int, batch: int, seq: int,
                        choices: int) -> List[Dict[str, np.ndarray]]:
    """SWAG-style `[CLS] context [SEP] ending_k [SEP]` x k: [batch, k, seq] and a label in k."""
    vocab = _bert_vocab(cfg)
    out = []
    for _ in range(steps):
        ids, segments, mask = (np.zeros((batch, choices, seq), np.int32) for _ in range(3))
        for row in range(batch):
            for choice in range(choices):
                ids[row, choice], segments[row, choice], mask[row, choice] = _bert_row(
                    rng, vocab, seq, *_bert_lengths(rng, seq, True))
        out.append({"input_ids": ids, "segment_ids": segments, "input_mask": mask,
                    "label_ids": rng.integers(0, choices, batch).astype(np.int32)})
    return out


# ---- GPT-1 batches ------------------------------------------------------------------------------

def _gpt_specials(cfg: configs.GptConfig) -> Tuple[int, int, int]:
    """(start, delimiter, classify): the three tokens added after the BPE vocabulary."""
    return cfg.vocab_size - 3, cfg.vocab_size - 2, cfg.vocab_size - 1


def _gpt_row(rng, cfg, seq: int, parts: Sequence[np.ndarray]):
    """`[s] part_1 [$] part_2 ... [e]` right-padded: ids, mask, classify position."""
    start, delim, classify = _gpt_specials(cfg)
    tokens = [start]
    for n, part in enumerate(parts):
        if n:
            tokens.append(delim)
        tokens.extend(part)
    tokens.append(classify)
    ids = np.zeros(seq, np.int32)
    ids[:len(tokens)] = tokens
    return ids, (np.arange(seq) < len(tokens)).astype(np.int32), len(tokens) - 1


def _gpt_text(rng, cfg, length: int) -> np.ndarray:
    return rng.integers(0, cfg.vocab_size - 3, length)


def gpt_classify_batches(rng, cfg, steps, batch, seq, num_labels):
    out = []
    for _ in range(steps):
        rows = [_gpt_row(rng, cfg, seq, [_gpt_text(rng, cfg, int(rng.integers(seq // 3, seq - 1)))])
                for _ in range(batch)]
        ids, mask, position = (np.stack(p) for p in zip(*rows))
        out.append({"input_ids": ids, "input_mask": mask,
                    "classify_position": position.astype(np.int32),
                    "label_ids": rng.integers(0, num_labels, batch).astype(np.int32)})
    return out


def gpt_view_batches(rng, cfg, steps, batch, seq, views: str, num_labels: int = 2):
    """[batch, 2, seq] inputs. views="similarity": the pair in both orders; "choices": Story
    Cloze's `[s] context [$] ending_k [e]` for two endings (label = the right ending)."""
    out = []
    for _ in range(steps):
        ids, mask, position = [], [], []
        for _ in range(batch):
            budget = int(rng.integers(seq // 2, seq - 2))
            len_a = int(rng.integers(1, budget - 1))
            a = _gpt_text(rng, cfg, len_a)
            if views == "similarity":
                b = _gpt_text(rng, cfg, budget - len_a)
                rows = [_gpt_row(rng, cfg, seq, [a, b]), _gpt_row(rng, cfg, seq, [b, a])]
            else:
                rows = [_gpt_row(rng, cfg, seq, [a, _gpt_text(rng, cfg, int(rng.integers(
                    1, budget - len_a + 1)))]) for _ in range(2)]
            i, m, p = (np.stack(parts) for parts in zip(*rows))
            ids.append(i), mask.append(m), position.append(p)
        out.append({"input_ids": np.stack(ids), "input_mask": np.stack(mask),
                    "classify_position": np.stack(position).astype(np.int32),
                    "label_ids": rng.integers(0, num_labels, batch).astype(np.int32)})
    return out


# ---- reference models and losses ----------------------------------------------------------------

def _hf_bert_config(cfg: configs.BertConfig, num_labels: int = 2):
    import transformers
    # The converter's own config mapping, dropout off (also the classifier's), eager attention:
    # the plainest reference arithmetic.
    return transformers.BertConfig(**{
        **hf_bert.config_to_hf(cfg), "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0, "classifier_dropout": 0.0,
        "num_labels": num_labels, "attn_implementation": "eager"})


def _hf_gpt_config(cfg: configs.GptConfig):
    import transformers
    if cfg.intermediate_size != 4 * cfg.hidden_size or not cfg.gelu_approximate:
        raise ValueError("transformers' OpenAIGPT has a 4 x n_embd MLP with tanh GELU")
    return transformers.OpenAIGPTConfig(
        vocab_size=cfg.vocab_size, n_positions=cfg.max_positions, n_embd=cfg.hidden_size,
        n_layer=cfg.num_layers, n_head=cfg.num_heads, afn="gelu",
        layer_norm_epsilon=cfg.layer_norm_epsilon, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, summary_first_dropout=0.0, attn_implementation="eager")


def _bert_inputs(batch):
    return {"input_ids": _torch_long(batch["input_ids"]),
            "token_type_ids": _torch_long(batch["segment_ids"]),
            "attention_mask": _torch_long(batch["input_mask"])}


def _hf_classification_loss(module, batch):
    import torch
    labels = batch["label_ids"]
    labels = (torch.as_tensor(labels) if np.issubdtype(labels.dtype, np.floating) else _torch_long(labels))
    return module(**_bert_inputs(batch), labels=labels).loss


def _hf_span_loss(module, batch):
    """BertForQuestionAnswering's own loss: the softmax runs over every position, padding
    included (as in google-research/bert's run_squad.py)."""
    return module(**_bert_inputs(batch), start_positions=_torch_long(batch["start_positions"]),
                  end_positions=_torch_long(batch["end_positions"])).loss


def _hf_span_loss_without_padding(module, batch):
    """Our recipe on BertForQuestionAnswering: its logits with padding set to MASKED_LOGIT
    (what our SpanModel outputs), then its loss formula (positions clamped to an ignored
    index, mean of the start and end cross-entropies), written out here because the class
    computes the loss on unmasked logits. Our SpanModel keeps padding out of the softmax so
    the loss does not depend on how far a length bucket pads a window."""
    import torch
    out = module(**_bert_inputs(batch))
    real = _torch_long(batch["input_mask"]) > 0
    start = torch.where(real, out.start_logits, torch.tensor(MASKED_LOGIT))
    end = torch.where(real, out.end_logits, torch.tensor(MASKED_LOGIT))
    ignored = start.size(1)
    loss = torch.nn.CrossEntropyLoss(ignore_index=ignored)
    return (loss(start, _torch_long(batch["start_positions"]).clamp(0, ignored))
            + loss(end, _torch_long(batch["end_positions"]).clamp(0, ignored))) / 2


def _hf_token_loss(module, batch):
    labels = np.where(batch["label_ids"] == IGNORE_LABEL, HF_IGNORE_INDEX, batch["label_ids"])
    return module(**_bert_inputs(batch), labels=_torch_long(labels)).loss


def _gpt_lm_labels(batch):
    """transformers' LM labels: the input ids, HF_IGNORE_INDEX on padding (its model shifts
    them: position t predicts t + 1)."""
    return _torch_long(np.where(batch["input_mask"] > 0, batch["input_ids"], HF_IGNORE_INDEX))


def _gpt_double_heads_loss(lm_weight: float):
    def loss(module, batch):
        ids = batch["input_ids"]
        views = (lambda a: a[:, None]) if ids.ndim == 2 else (lambda a: a)  # one "choice"
        # OpenAIGPTModel flattens [b, k, s] input_ids but not the attention mask, which it
        # only broadcasts: it takes the mask as [b * k, s].
        out = module(input_ids=_torch_long(views(ids)),
                     attention_mask=_torch_long(batch["input_mask"].reshape(-1, ids.shape[-1])),
                     mc_token_ids=_torch_long(views(batch["classify_position"])),
                     labels=_gpt_lm_labels({k: views(batch[k]) for k in ("input_ids",
                                                                         "input_mask")}),
                     mc_labels=_torch_long(batch["label_ids"]))
        return out.mc_loss + lm_weight * out.loss
    return loss


def _gpt_double_heads(cfg, num_outputs: int):
    """OpenAIGPTDoubleHeadsModel; for classification its multiple-choice projection (fixed at
    1 unit by the class) becomes `num_outputs` wide so the one "choice" scores every class."""
    import torch
    import transformers
    module = transformers.OpenAIGPTDoubleHeadsModel(_hf_gpt_config(cfg))
    if num_outputs != 1:
        module.multiple_choice_head.summary = torch.nn.Linear(cfg.hidden_size, num_outputs)
    return module


def make_gpt_similarity_reference(cfg, num_labels: int):
    """GPT-1 similarity as no transformers class does it: OpenAIGPTLMHeadModel over both
    orders, the final states at the classify tokens summed, then a Linear."""
    import torch
    import transformers

    class GptSimilarityReference(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lm = transformers.OpenAIGPTLMHeadModel(_hf_gpt_config(cfg))
            self.classifier = torch.nn.Linear(cfg.hidden_size, num_labels)

        def forward(self, input_ids, attention_mask, classify_position, labels, lm_labels):
            batch, views, seq = input_ids.shape
            out = self.lm(input_ids=input_ids.reshape(-1, seq),
                          attention_mask=attention_mask.reshape(-1, seq),
                          labels=lm_labels.reshape(-1, seq), output_hidden_states=True)
            final = out.hidden_states[-1]                                  # [b * 2, s, h]
            states = final[torch.arange(batch * views), classify_position.reshape(-1)]
            logits = self.classifier(states.reshape(batch, views, -1).sum(dim=1))
            return torch.nn.functional.cross_entropy(logits, labels), out.loss

    return GptSimilarityReference()


def _gpt_similarity_loss(lm_weight: float):
    def loss(module, batch):
        task, lm = module(_torch_long(batch["input_ids"]), _torch_long(batch["input_mask"]),
                          _torch_long(batch["classify_position"]),
                          _torch_long(batch["label_ids"]), _gpt_lm_labels(batch))
        return task + lm_weight * lm
    return loss


# ---- assembling the cases -----------------------------------------------------------------------

def _random_backbone(cls, cfg, seed: int):
    def make(dtype: Optional[str] = None):
        return cls(cfg, seed=seed, dtype=dtype)
    return make


def minilm_backbone(seed: int = 0) -> Tuple[Callable[..., BertEncoder], configs.BertConfig]:
    """(a builder (dtype=None) of the real all-MiniLM-L6-v2 through our converter, rebuilt with
    every dropout at 0; its config)."""
    folder = hf_bert.minilm_folder()
    loaded, _ = hf_bert.load_hf_bert(folder)
    weights = slot_lib.read_slots(slot_lib.bert_slots(loaded))
    cfg = dataclasses.replace(loaded.config, hidden_dropout=0.0, attention_dropout=0.0)

    def make(dtype: Optional[str] = None):
        encoder = BertEncoder(cfg, seed=seed, dtype=dtype)
        slot_lib.assign(slot_lib.bert_slots(encoder), weights, folder)
        return encoder
    return make, cfg


def _head(attr: str, torch_prefix: str):
    return lambda model: dense_ties(getattr(model, attr), attr, torch_prefix)


HEADS = ("bert_classify_single", "bert_classify_pair", "bert_regression", "bert_span",
         "bert_token", "bert_multiple_choice", "gpt_classify", "gpt_similarity",
         "gpt_multiple_choice", "bert_classify_minilm")
# Heads that load the real MiniLM (a few seconds of conversion, ~22M parameters).
REAL_WEIGHT_HEADS = ("bert_classify_minilm",)


def make_case(head: str, steps: int = 20, batch: int = 8, seq: int = 24, seed: int = 0,
              lm_weight: float = 0.5, span_padding_in_softmax: bool = False) -> ParityCase:
    """One head's case. Random configs train at lr 1e-3 so that 20 steps move the weights
    (LayerNorm gains by ~1e-2) far beyond the 1e-5 bar: a wrong decay exclusion or update
    rule shows. The MiniLM case uses BERT's fine-tuning lr 5e-5 at length 64.

    seed: the batches' and every initial weight's (backbone and head).
    span_padding_in_softmax: the span reference uses BertForQuestionAnswering's own loss,
    whose softmax includes padding (google-research/bert's too), instead of our recipe's.
    """
    case = _make_case(head, steps, batch, seq, seed, lm_weight, span_padding_in_softmax)
    return dataclasses.replace(case, seed=seed)


def _make_case(head: str, steps: int, batch: int, seq: int, seed: int, lm_weight: float,
               span_padding_in_softmax: bool) -> ParityCase:
    import transformers
    rng = np.random.default_rng(seed)
    lr = 1e-3
    if head in ("bert_classify_single", "bert_classify_pair"):
        task = get_task("sst2" if head.endswith("single") else "mrpc")
        pair = head.endswith("pair")
        return ParityCase(
            head, f"BERT sequence classification ({'pair' if pair else 'single'}, 2 labels)",
            "bert", task, bert_text_batches(rng, BERT_CONFIG, steps, batch, seq, pair, 2),
            _random_backbone(BertEncoder, BERT_CONFIG, seed),
            _head("classifier", "classifier"),
            lambda: transformers.BertForSequenceClassification(_hf_bert_config(BERT_CONFIG, 2)),
            _hf_classification_loss, "BertForSequenceClassification", lr)
    if head == "bert_classify_minilm":
        make_backbone, cfg = minilm_backbone(seed)
        return ParityCase(
            head, "BERT sequence classification (pair) on the real all-MiniLM-L6-v2",
            "bert", get_task("mrpc"),
            bert_text_batches(rng, cfg, steps, batch, 64, True, 2), make_backbone,
            _head("classifier", "classifier"),
            lambda: transformers.BertForSequenceClassification(_hf_bert_config(cfg, 2)),
            _hf_classification_loss, "BertForSequenceClassification", 5e-5)
    if head == "bert_regression":
        return ParityCase(
            head, "BERT regression (STS-B-like, num_labels=1, MSE)", "bert", get_task("stsb"),
            bert_text_batches(rng, BERT_CONFIG, steps, batch, seq, True, 1, regression=True),
            _random_backbone(BertEncoder, BERT_CONFIG, seed), _head("classifier", "classifier"),
            lambda: transformers.BertForSequenceClassification(_hf_bert_config(BERT_CONFIG, 1)),
            _hf_classification_loss, "BertForSequenceClassification (num_labels=1: MSELoss)", lr)
    if head == "bert_span":
        return ParityCase(
            head, "BERT span (SQuAD start/end; answers outside the window -> [CLS])", "bert",
            get_task("squad_v1"), bert_span_batches(rng, BERT_CONFIG, steps, batch, seq),
            _random_backbone(BertEncoder, BERT_CONFIG, seed),
            _head("span_classifier", "qa_outputs"),
            lambda: transformers.BertForQuestionAnswering(_hf_bert_config(BERT_CONFIG, 2)),
            *((_hf_span_loss, "BertForQuestionAnswering (its own loss: padding in the "
               "softmax)") if span_padding_in_softmax else
              (_hf_span_loss_without_padding, "BertForQuestionAnswering logits, padding "
               "masked out of the softmax as ours does, then its loss formula")), lr)
    if head == "bert_token":
        task = get_task("conll2003")
        return ParityCase(
            head, f"BERT token classification ({task.num_labels} tags, first sub-tokens)",
            "bert", task,
            bert_token_batches(rng, BERT_CONFIG, steps, batch, seq, task.num_labels),
            _random_backbone(BertEncoder, BERT_CONFIG, seed), _head("classifier", "classifier"),
            lambda: transformers.BertForTokenClassification(
                _hf_bert_config(BERT_CONFIG, task.num_labels)),
            _hf_token_loss, "BertForTokenClassification (ignored labels -100)", lr)
    if head == "bert_multiple_choice":
        return ParityCase(
            head, "BERT multiple choice (SWAG-style, 4 choices)", "bert", get_task("swag"),
            bert_choice_batches(rng, BERT_CONFIG, steps, batch, seq, 4),
            _random_backbone(BertEncoder, BERT_CONFIG, seed), _head("classifier", "classifier"),
            lambda: transformers.BertForMultipleChoice(_hf_bert_config(BERT_CONFIG, 2)),
            _hf_classification_loss, "BertForMultipleChoice", lr,
            gradient_free=("classifier/bias",))
    mc_head = "multiple_choice_head.summary"
    if head == "gpt_classify":
        return ParityCase(
            head, "GPT-1 classification `[s] text [e]` + aux LM (lambda 0.5)", "gpt",
            get_task("sst2"), gpt_classify_batches(rng, GPT_CONFIG, steps, batch, seq, 2),
            _random_backbone(GptDecoder, GPT_CONFIG, seed), _head("classifier", mc_head),
            lambda: _gpt_double_heads(GPT_CONFIG, 2), _gpt_double_heads_loss(lm_weight),
            "OpenAIGPTDoubleHeadsModel (summary projection widened to 2 classes)", lr)
    if head == "gpt_similarity":
        return ParityCase(
            head, "GPT-1 similarity (both orders, final states summed) + aux LM", "gpt",
            get_task("mrpc"), gpt_view_batches(rng, GPT_CONFIG, steps, batch, seq, "similarity"),
            _random_backbone(GptDecoder, GPT_CONFIG, seed), _head("classifier", "classifier"),
            lambda: make_gpt_similarity_reference(GPT_CONFIG, 2), _gpt_similarity_loss(lm_weight),
            "by hand: OpenAIGPTLMHeadModel (LM loss) + summed classify states + Linear", lr,
            backbone_prefix="lm.transformer.")
    if head == "gpt_multiple_choice":
        return ParityCase(
            head, "GPT-1 multiple choice (Story Cloze, 2 endings) + aux LM", "gpt",
            get_task("story_cloze"), gpt_view_batches(rng, GPT_CONFIG, steps, batch, seq,
                                                      "choices"),
            _random_backbone(GptDecoder, GPT_CONFIG, seed), _head("classifier", mc_head),
            lambda: _gpt_double_heads(GPT_CONFIG, 1), _gpt_double_heads_loss(lm_weight),
            "OpenAIGPTDoubleHeadsModel", lr, gradient_free=("classifier/bias",))
    raise ValueError(f"unknown head {head!r}; expected one of {HEADS}")
