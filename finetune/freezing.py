"""Freezing policies of fine-tuning (`--strategy`, the BERT notes' "fine-tuning strategies"):
which backbone weights train, and layer transfer. Not to be confused with a tf.distribute
strategy (`--distribution_strategy`, tfmodels.training.make_strategy).

The backbone is seen as a stack of groups, bottom to top (`layer_groups`):
  [embeddings] [layer 0] ... [layer L-1 (+ BERT's pooler, which sits on top of it)]
and every policy trains the task head plus some top part of that stack:
  full      everything (both papers' default fine-tuning)
  frozen    the head only: the backbone is a fixed feature extractor (BERT's feature-based
            approach, Section 5.3); a frozen backbone also runs without dropout
            (see finetune.models.TaskModel)
  top_k     the top k transformer layers; embeddings and lower layers frozen
  GradualUnfreezing  ULMFiT (Howard & Ruder 2018): start with the head only and unfreeze one
            stage of groups, from the top down, every `steps_per_stage` steps

`transfer_layers` copies the embeddings and the first k layers of a pretrained backbone into a
freshly initialised one: GPT-1's layer-transfer analysis (Figure 2, left).

GPT-1's LSTM baseline (tfmodels.lstm) is the same stack with LSTM layers in place of transformer
layers: [token embedding + lm_projection (its tied LM output's projection)] [LSTM 0] ...; every
policy and transfer_layers apply to it unchanged (k counts LSTM layers).

Keras optimizers create slots for the variables they are built with, and a train step traces
`model.trainable_variables` once, so after a change of the trainable set the caller builds a new
TrainStep. To keep one optimizer (its Adam moments and schedule step) across stages, build it
once on `GradualUnfreezing.trainable_candidates()`: a built optimizer accepts any subset.
"""
from __future__ import annotations

from typing import List, Sequence

import keras

from finetune.models import as_backbone, backbone_architecture

# The policies by name (FinetuneConfig.freezing, --freezing): `apply_freezing` sets the first three once;
# "gradual" is GradualUnfreezing, which changes the trainable set while training.
FREEZING_POLICIES = ("full", "frozen", "top_k", "gradual")


def stacked_layers(model) -> List[keras.layers.Layer]:
    """The backbone's layer stack, bottom to top: transformer layers, or the LSTM baseline's
    LSTM layers."""
    backbone = as_backbone(model)
    if backbone_architecture(backbone) == "lstm":
        return list(backbone.lstm_layers)
    return list(backbone.transformer_layers)


def layer_groups(model) -> List[List[keras.layers.Layer]]:
    """The backbone's layers grouped bottom to top: embeddings, then one group per transformer
    (or LSTM) layer; BERT's pooler joins the top layer's group, the LSTM's `lm_projection` (the
    input of its tied LM output) the embeddings. `model`: a backbone or a model holding one."""
    backbone = as_backbone(model)
    architecture = backbone_architecture(backbone)
    if architecture == "bert":
        embeddings = [backbone.token_embedding, backbone.segment_embedding,
                      backbone.position_embedding, backbone.embedding_layer_norm]
    elif architecture == "lstm":
        embeddings = [backbone.token_embedding, backbone.lm_projection]
    else:
        embeddings = [backbone.token_embedding, backbone.position_embedding]
    groups = [embeddings] + [[layer] for layer in stacked_layers(backbone)]
    if architecture == "bert":
        groups[-1].append(backbone.pooler)
    return groups


def _set_trainable(layer: keras.layers.Layer, value: bool) -> None:
    """`layer.trainable = value` for the layer and all its sublayers.

    Keras' TF attribute tracking skips an assignment whose value `is` the current one, so
    `trainable = True` on a model already flagged True would not reach a frozen sublayer;
    flipping first forces the recursive setter.
    """
    layer.trainable = not value
    layer.trainable = value


def _train_top_groups(model, count: int) -> None:
    """Everything outside the backbone trains; of the backbone only the top `count` groups."""
    backbone = as_backbone(model)
    groups = layer_groups(backbone)
    if not 0 <= count <= len(groups):
        raise ValueError(f"can unfreeze 0..{len(groups)} groups, got {count}")
    _set_trainable(model, True)  # recursive: resets any earlier strategy
    for group in groups[:len(groups) - count]:
        for layer in group:
            _set_trainable(layer, False)
    if count == 0:
        _set_trainable(backbone, False)
    for layer in getattr(model, "unused_backbone_layers", ()):
        _set_trainable(layer, False)  # no gradient reaches it (see TaskModel)


def full(model) -> keras.Model:
    """Train every weight (the papers' fine-tuning). Returns `model`."""
    _train_top_groups(model, len(layer_groups(model)))
    return model


def frozen(model) -> keras.Model:
    """Train the head only; the backbone is frozen and runs in inference mode."""
    _train_top_groups(model, 0)
    return model


def top_k(model, k: int) -> keras.Model:
    """Train the top k transformer (or LSTM) layers (and BERT's pooler when k >= 1) and the
    head; embeddings and the lower layers stay frozen. k in 0..num_layers (0 = frozen)."""
    num_layers = as_backbone(model).config.num_layers
    if not 0 <= k <= num_layers:
        raise ValueError(f"top_k: k must be in 0..{num_layers} (the backbone's layers), got {k}")
    _train_top_groups(model, k)
    return model


def apply_freezing(model, policy: str, k: int = 0) -> keras.Model:
    """`full`, `frozen` or `top_k` (with k) by name, for flags and configs ("gradual" is
    GradualUnfreezing's, step by step)."""
    if policy == "full":
        return full(model)
    if policy == "frozen":
        return frozen(model)
    if policy == "top_k":
        return top_k(model, k)
    raise ValueError(f"strategy must be one of {FREEZING_POLICIES[:3]} here, got {policy!r}")


class GradualUnfreezing:
    """ULMFiT's schedule: stage 0 trains the head only; each later stage unfreezes the next
    `layers_per_stage` groups of `layer_groups` from the top down (the embeddings last).

    Stage s = step // steps_per_stage trains the top min(s * layers_per_stage, groups) groups.
    Creating the schedule applies stage 0. Call `update(step)` before each step; when it
    returns True the trainable set changed and the caller builds a new TrainStep (and a new
    optimizer unless it was built on `trainable_candidates()`).
    """

    def __init__(self, model: keras.Model, layers_per_stage: int = 1,
                 steps_per_stage: int = 1000):
        if layers_per_stage < 1 or steps_per_stage < 1:
            raise ValueError(f"layers_per_stage ({layers_per_stage}) and steps_per_stage "
                             f"({steps_per_stage}) must be >= 1")
        self.model = model
        self.layers_per_stage = layers_per_stage
        self.steps_per_stage = steps_per_stage
        self.num_groups = len(layer_groups(model))
        self.unfrozen_groups = -1
        self.update(0)

    @property
    def num_stages(self) -> int:
        """Stages including the head-only stage 0; the last one trains everything."""
        return -(-self.num_groups // self.layers_per_stage) + 1

    def groups_at(self, step: int) -> int:
        """How many backbone groups (from the top) train at `step`."""
        stage = max(step, 0) // self.steps_per_stage
        return min(stage * self.layers_per_stage, self.num_groups)

    def update(self, step: int) -> bool:
        """Applies the stage of `step`; True if the trainable set changed."""
        groups = self.groups_at(step)
        if groups == self.unfrozen_groups:
            return False
        _train_top_groups(self.model, groups)
        self.unfrozen_groups = groups
        return True

    def trainable_candidates(self) -> List[keras.Variable]:
        """Every variable some stage trains (the whole model): build the optimizer on these
        once so its moments and step count carry across stages (a built Keras optimizer
        accepts any subset of its variables). The current stage is left applied."""
        _train_top_groups(self.model, self.num_groups)
        variables = list(self.model.trainable_variables)
        _train_top_groups(self.model, self.unfrozen_groups)
        return variables


def _transfer_mismatch(source_cfg, target_cfg) -> List[str]:
    fields = ["vocab_size", "hidden_size", "num_heads", "intermediate_size", "max_positions"]
    if hasattr(source_cfg, "lstm_units"):  # the LSTM baseline: no heads, no position table
        fields = ["vocab_size", "embedding_size", "lstm_units"]
    if hasattr(source_cfg, "type_vocab_size"):
        fields.append("type_vocab_size")
    return [f"{f} ({getattr(source_cfg, f)} vs {getattr(target_cfg, f)})"
            for f in fields if getattr(source_cfg, f) != getattr(target_cfg, f)]


def _copy_layer(source: keras.layers.Layer, target: keras.layers.Layer) -> int:
    if len(source.weights) != len(target.weights):
        raise ValueError(f"layer {target.name}: {len(source.weights)} source weights vs "
                         f"{len(target.weights)} target weights")
    for src, dst in zip(source.weights, target.weights):
        if tuple(src.shape) != tuple(dst.shape):
            raise ValueError(f"{dst.path}: source shape {src.shape} vs target {dst.shape}")
        dst.assign(src)
    return len(source.weights)


def transfer_layers(source, target, k: int) -> List[str]:
    """Copies the embeddings and transformer layers 0..k-1 of `source` into `target` (both
    backbones of one architecture, or models holding them); layers k.. and BERT's pooler keep
    their initialisation. Returns the names of the copied layers.

    GPT-1 Figure 2 (left): k = 0 transfers the embeddings only, k = L the whole decoder.
    Raises ValueError when the architectures or the shape-defining config fields differ, or k
    exceeds either model's depth.
    """
    source, target = as_backbone(source), as_backbone(target)
    if backbone_architecture(source) != backbone_architecture(target):
        raise ValueError(f"cannot transfer layers from a {type(source).__name__} into a "
                         f"{type(target).__name__}")
    mismatch = _transfer_mismatch(source.config, target.config)
    if mismatch:
        raise ValueError("cannot transfer layers between backbones whose configs differ in "
                         + ", ".join(mismatch))
    depth = min(source.config.num_layers, target.config.num_layers)
    if not 0 <= k <= depth:
        raise ValueError(f"k must be in 0..{depth} (source has {source.config.num_layers} "
                         f"layers, target {target.config.num_layers}), got {k}")
    pairs: Sequence = list(zip(layer_groups(source)[0], layer_groups(target)[0]))
    pairs += list(zip(stacked_layers(source)[:k], stacked_layers(target)[:k]))
    for src, dst in pairs:
        _copy_layer(src, dst)
    return [dst.name for _, dst in pairs]
