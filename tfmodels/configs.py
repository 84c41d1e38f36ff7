"""Model configurations for BERT and GPT-1, with the named sizes from the two papers.

A config is a plain frozen dataclass: it is what checkpoints, converters and binaries pass
around, and `to_dict` / `from_dict` make it JSON-friendly (it is stored in `.keras` files
through the models' `get_config`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Dict, Tuple, Union

from tfmodels.architectures import check_architecture


class _ModelConfig:
    """What every model config shares: the positive-size check and JSON-friendly (de)serialisation."""

    POSITIVE_FIELDS: ClassVar[Tuple[str, ...]] = ()

    def _check_positive(self) -> None:
        for name in self.POSITIVE_FIELDS:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Dict[str, Any]):
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {unknown}")
        return cls(**values)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class TransformerConfig(_ModelConfig):
    """Fields shared by both architectures."""

    POSITIVE_FIELDS: ClassVar[Tuple[str, ...]] = (
        "vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
        "max_positions")

    vocab_size: int
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_positions: int = 512
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    # Both original code bases use the tanh approximation of GELU.
    gelu_approximate: bool = True
    layer_norm_epsilon: float = 1e-12
    initializer_range: float = 0.02

    def __post_init__(self):
        self._check_positive()  # first: num_heads 0 would divide by zero below
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads


@dataclasses.dataclass(frozen=True)
class BertConfig(TransformerConfig):
    """BERT (Devlin et al. 2018): bidirectional encoder with segment embeddings.

    `causal`: left-to-right attention (position t sees positions <= t), the "LTR & No NSP"
    ablation of the BERT paper's Table 5; kept when such a model is fine-tuned.
    """

    vocab_size: int = 30522
    type_vocab_size: int = 2
    layer_norm_epsilon: float = 1e-12
    causal: bool = False


@dataclasses.dataclass(frozen=True)
class GptConfig(TransformerConfig):
    """GPT-1 (Radford et al. 2018): causal decoder.

    `vocab_size` counts the 40478 BPE tokens plus the added tokens (start, delimiter,
    classify) that fine-tuning appends to the embedding table.
    """

    vocab_size: int = 40478 + 3
    max_positions: int = 512
    layer_norm_epsilon: float = 1e-5


@dataclasses.dataclass(frozen=True)
class LstmConfig(_ModelConfig):
    """GPT-1's LSTM baseline (Radford et al. 2018, Section 5, Table 5): "a single layer 2048
    unit LSTM using the same framework" (GPT-1's BPE vocabulary, pretraining, input transforms
    and auxiliary LM objective). Not a TransformerConfig: no heads, no attention, no positions.

    embedding_size: width of the token embedding, which is also the tied LM output matrix
      (the LSTM's `lstm_units`-wide states are projected back to it before the tied softmax).
    max_positions: only bounds sequence lengths (a recurrent model has no position table); kept
      so code that checks `seq_length <= config.max_positions` treats every backbone alike.
    """

    vocab_size: int = 40478 + 3
    embedding_size: int = 768
    lstm_units: int = 2048
    num_layers: int = 1
    max_positions: int = 512
    hidden_dropout: float = 0.1
    initializer_range: float = 0.02

    POSITIVE_FIELDS: ClassVar[Tuple[str, ...]] = (
        "vocab_size", "embedding_size", "lstm_units", "num_layers", "max_positions")

    def __post_init__(self):
        self._check_positive()

    @property
    def hidden_size(self) -> int:
        """The width of every layer's output (what task heads read): `lstm_units`."""
        return self.lstm_units


ModelConfig = Union[TransformerConfig, LstmConfig]


# BERT sizes: the paper's Base/Large and the compact models released with it (Turc et al.).
_BERT_SIZES = {
    "bert_tiny": dict(num_layers=2, hidden_size=128, num_heads=2),
    "bert_mini": dict(num_layers=4, hidden_size=256, num_heads=4),
    "bert_small": dict(num_layers=4, hidden_size=512, num_heads=8),
    "bert_medium": dict(num_layers=8, hidden_size=512, num_heads=8),
    "bert_base": dict(num_layers=12, hidden_size=768, num_heads=12),
    "bert_large": dict(num_layers=24, hidden_size=1024, num_heads=16),
}

NAMED_CONFIGS: Dict[str, TransformerConfig] = {
    name: BertConfig(intermediate_size=4 * size["hidden_size"], **size)
    for name, size in _BERT_SIZES.items()
}
NAMED_CONFIGS["gpt1"] = GptConfig()
# Tiny configs for tests and smoke runs.
NAMED_CONFIGS["bert_test"] = BertConfig(
    vocab_size=100, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
    max_positions=64)
NAMED_CONFIGS["gpt_test"] = GptConfig(
    vocab_size=100, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
    max_positions=64)
NAMED_CONFIGS["gpt_small"] = GptConfig(
    num_layers=4, hidden_size=256, num_heads=4, intermediate_size=1024, max_positions=512)
# GPT-1's LSTM baseline: the paper's 1 x 2048 units (768-wide embedding, as GPT-1's), a
# tiny one for tests and a small one for CPU ablations.
NAMED_CONFIGS["lstm_2048"] = LstmConfig()
NAMED_CONFIGS["lstm_test"] = LstmConfig(vocab_size=100, embedding_size=32, lstm_units=64,
                                        max_positions=64)
NAMED_CONFIGS["lstm_small"] = LstmConfig(embedding_size=256, lstm_units=512)


def get_config(name_or_config: Union[str, ModelConfig], **overrides) -> ModelConfig:
    """Returns a named config (see NAMED_CONFIGS), optionally with fields replaced."""
    if isinstance(name_or_config, (TransformerConfig, LstmConfig)):
        config = name_or_config
    else:
        if name_or_config not in NAMED_CONFIGS:
            raise ValueError(
                f"unknown model config {name_or_config!r}; known: {sorted(NAMED_CONFIGS)}")
        config = NAMED_CONFIGS[name_or_config]
    return config.replace(**overrides) if overrides else config


def config_from_dict(values: Dict[str, Any]) -> TransformerConfig:
    """Inverse of `config_to_dict`: picks the class from the stored `architecture` key."""
    values = dict(values)
    architecture = values.pop("architecture")
    classes = {"bert": BertConfig, "gpt": GptConfig, "lstm": LstmConfig}
    return classes[check_architecture(architecture)].from_dict(values)


def config_to_dict(config: ModelConfig) -> Dict[str, Any]:
    architecture = ("bert" if isinstance(config, BertConfig)
                    else "lstm" if isinstance(config, LstmConfig) else "gpt")
    return {"architecture": architecture, **config.to_dict()}


def resolve_config(config, expected_cls: type) -> ModelConfig:
    """A model's `config` argument as an `expected_cls` instance: the config itself, a named
    size ("bert_base") or its dict form (what `get_config` of a saved model holds)."""
    if isinstance(config, dict):
        config = config_from_dict(config)
    elif isinstance(config, str):
        config = get_config(config)
    if not isinstance(config, expected_cls):
        raise ValueError(f"expected a {expected_cls.__name__}, got {type(config).__name__}")
    return config


def resolve_backbone(value, backbone_cls: type, **build_kwargs):
    """A wrapping model's backbone argument as a `backbone_cls` instance: the backbone itself,
    its serialised form (a `.keras` config dict) or anything `backbone_cls` takes as config,
    built then with `build_kwargs` (the wrapper's `seed` and `dtype`)."""
    import keras  # here, not at the top: configs alone must not need a Keras backend
    if isinstance(value, dict) and "class_name" in value:
        value = keras.saving.deserialize_keras_object(value)
    return value if isinstance(value, backbone_cls) else backbone_cls(value, **build_kwargs)
