"""GPT-1 BPE tokenizer: the original vocabulary, graph/eager agreement on real text, pinned
tokenisations, added tokens, bad files, and learning merges."""
import json

import pytest
import tensorflow as tf

from tfmodels.tokenizers.bpe_vocab import learn_bpe_merges, write_bpe_files
from tfmodels.tokenizers.gpt_bpe import GptBpeTokenizer, pre_tokenize


@pytest.fixture(scope="module")
def tokenizer(gpt_bpe):
    return gpt_bpe


def real_lines(path, count):
    with open(path, encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip()]
    return lines[:count]


def test_vocabulary_and_added_tokens(tokenizer):
    assert tokenizer.bpe_vocab_size == 40478
    assert tokenizer.vocab_size == 40481
    assert tokenizer.family == "gpt"
    assert (tokenizer.start_id, tokenizer.delimiter_id, tokenizer.classify_id) == (
        40478, 40479, 40480)
    assert tokenizer.decoder[tokenizer.unk_id] == "<unk>"


# Pinned against the original vocabulary: each id list was checked symbol by symbol.
PINNED = {
    "The quick brown fox jumps over the lazy dog.":
        [481, 2279, 2507, 8573, 11670, 715, 481, 8447, 2585, 239],
    # spaCy-style contractions: do n't, they 'll, wo n't.
    "I don't think they'll come, won't they?":
        [249, 587, 538, 825, 600, 804, 848, 240, 1497, 538, 600, 257],
    # Standardisation turns the em dash into '-'; rare words split into pieces.
    "Transformers learn representations\u2014unsupervised!":
        [2973, 1858, 650, 3079, 8490, 7798, 260, 563, 28272, 267],
    "café naïve": [13550, 24213],
}


@pytest.mark.parametrize("text, ids", PINNED.items())
def test_pinned_tokenisations(tokenizer, text, ids):
    assert tokenizer.encode([text])[0] == ids
    assert tokenizer.tokenize([text]).to_list()[0] == ids


def test_symbols_of_pinned_sentence(tokenizer):
    ids = tokenizer.encode(["I don't"])[0]
    assert [tokenizer.decoder[i] for i in ids] == ["i</w>", "do</w>", "n't</w>"]


def test_graph_matches_eager_on_real_text(tokenizer, shared_data):
    lines = (real_lines(shared_data / "corpus/wikitext2-valid.tokens.txt", 2000)
             + real_lines(shared_data / "corpus/tinyshakespeare.txt", 1000))
    eager = tokenizer.encode(lines, clean=False)
    graph = tf.function(tokenizer.tokenize)(tf.constant(lines)).to_list()
    mismatches = [i for i, (a, b) in enumerate(zip(eager, graph)) if a != b]
    assert not mismatches, [lines[i] for i in mismatches[:3]]
    assert sum(map(len, eager)) > 100_000
    # ftfy leaves this clean text alone, so cleaning changes nothing.
    assert tokenizer.encode(lines[:200], clean=True) == eager[:200]


def test_tokenize_in_tf_data(tokenizer):
    texts = ["hello world", "", "a much longer line of text , with punctuation !"]
    dataset = tf.data.Dataset.from_tensor_slices(texts).batch(2).map(tokenizer.tokenize)
    rows = [row for batch in dataset for row in batch.to_list()]
    assert rows == tokenizer.encode(texts)


def test_decode_inverts_encode(tokenizer):
    text = "Hello, World! It's a test: (really)."
    assert tokenizer.decode(tokenizer.encode([text])[0]) == \
        "hello , world ! it 's a test : ( really ) ."
    assert tokenizer.decode([tokenizer.start_id, 481, tokenizer.classify_id]) == \
        "_start_ the _classify_"


def test_clean_text_repairs_mojibake(tokenizer):
    assert tokenizer.clean_text("cafÃ©") == "café"
    assert tokenizer.encode(["cafÃ©"])[0] == tokenizer.encode(["café"])[0]


def test_pre_tokenize_rules():
    # spaCy's English rules: contraction exceptions split, dash runs, decimals, times,
    # ellipses, letter-dot abbreviations and listed abbreviations stay whole.
    words = pre_tokenize(["Don't stop--it's 3.5 km...", "  ",
                          "Mr. Smith can't go to the U.S. at 9:00, e.g. today."]).to_list()
    assert words[0] == [b"do", b"n't", b"stop", b"--", b"it", b"'s", b"3.5", b"km", b"..."]
    assert words[1] == []
    assert words[2] == [b"mr.", b"smith", b"ca", b"n't", b"go", b"to", b"the", b"u.s.", b"at",
                        b"9:00", b",", b"e.g.", b"today", b"."]


def test_encoder_without_unk_drops_unknown_symbols(tmp_path):
    enc, bpe = write_files(tmp_path, {"a</w>": 0, "b</w>": 1}, "#version: 0.2\n")
    tokenizer = GptBpeTokenizer(enc, bpe)
    assert tokenizer.unk_id is None
    assert tokenizer.encode(["a z b"], clean=False) == [[0, 1]]
    assert tokenizer.tokenize(["a z b"]).to_list() == [[0, 1]]


def write_files(tmp_path, encoder, merges_text):
    enc, bpe = tmp_path / "enc.json", tmp_path / "vocab.bpe"
    enc.write_text(json.dumps(encoder), encoding="utf-8")
    bpe.write_text(merges_text, encoding="utf-8")
    return str(enc), str(bpe)


@pytest.mark.parametrize("encoder, merges, message", [
    ({"<unk>": 0, "a": 1, "b": 2, "ab": 3}, "#version: 0.2\na b c\n",
     r"line 2: expected two symbols"),
    ({"<unk>": 0, "a": 1, "b": 2}, "#version: 0.2\na b\n", r"line 2: symbol 'ab' of merge 'a b' is not in"),
    ({"<unk>": 0, "a": 2}, "#version: 0.2\n", r"ids must be the integers 0\.\.1"),
    ({"<unk>": 0, "a": 1, "b": 2, "ab": 3}, "#version: 0.2\na b\na b\n",
     r"line 3: merge 'a b' repeats line 2"),
])
def test_bad_files_name_file_and_line(tmp_path, encoder, merges, message):
    enc, bpe = write_files(tmp_path, encoder, merges)
    with pytest.raises(ValueError, match=message) as error:
        GptBpeTokenizer(enc, bpe)
    assert "enc.json" in str(error.value) or "vocab.bpe" in str(error.value)
    with pytest.raises(ValueError, match="does not exist"):
        GptBpeTokenizer(str(tmp_path / "missing.json"), bpe)


def test_learned_merges_round_trip(tmp_path, shared_data):
    lines = real_lines(shared_data / "corpus/tinyshakespeare.txt", 2000)
    merges, encoder = learn_bpe_merges(lines, num_merges=300)
    assert len(merges) == 300
    assert merges[0] == ("t", "h")  # as in the original GPT-1 merges: English's top pair
    enc, bpe = str(tmp_path / "enc.json"), str(tmp_path / "vocab.bpe")
    write_bpe_files(merges, encoder, enc, bpe)
    tokenizer = GptBpeTokenizer(enc, bpe)
    assert tokenizer.vocab_size == len(encoder) + 3
    for word in ("the", "and", "you"):
        ids = tokenizer.encode([word])[0]
        assert [tokenizer.decoder[i] for i in ids] == [word + "</w>"]
    sample = lines[:300]
    assert tokenizer.tokenize(sample).to_list() == tokenizer.encode(sample, clean=False)
    assert tokenizer.unk_id not in sum(tokenizer.encode(sample, clean=False), [])
    assert tokenizer.encode(["\u4e2d"])[0] == [tokenizer.unk_id]  # never seen: <unk>
