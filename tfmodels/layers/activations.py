"""GELU in both forms.

BERT and GPT-1 both shipped the tanh approximation
`0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`; the exact form `x Phi(x)` is what Hugging Face's
`"gelu"` computes. Which one a model uses is a config field so converted weights reproduce the
function they were trained with.
"""
import keras


def gelu(x, approximate: bool = True):
    """GELU of a tensor of any shape; `approximate` selects the tanh form."""
    return keras.activations.gelu(x, approximate=approximate)
