"""One set of names for the networks and the input layouts (tfmodels.architectures)."""
import pytest

from tfmodels import architectures, preprocessing
from tfmodels.checkpoints.formats import FORMAT_ARCHITECTURE


def test_every_architecture_has_an_input_format():
    assert {architectures.input_format(a) for a in architectures.ARCHITECTURES} == set(
        architectures.INPUT_FORMATS)
    assert architectures.input_format("lstm") == "gpt"
    assert set(FORMAT_ARCHITECTURE.values()) <= set(architectures.ARCHITECTURES)
    # Fine-tuning imports the input formats from preprocessing: the same tuple.
    assert preprocessing.INPUT_FORMATS is architectures.INPUT_FORMATS


def test_unknown_names_list_the_allowed_ones():
    with pytest.raises(ValueError, match="architecture must be one of bert, gpt, lstm, got 'rnn'"):
        architectures.input_format("rnn")
    with pytest.raises(ValueError, match="mode must be one of bert, gpt, got 'lstm'"):
        architectures.check_input_format("lstm", what="mode")
