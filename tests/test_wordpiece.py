"""WordPiece tokenizer and packing: agreement with the Hugging Face tokenizer of a real BERT,
graph/eager equality, truncation, vocabulary validation and learning."""
import csv

import numpy as np
import pytest
import tensorflow as tf

from tfmodels.preprocessing import TextPacker
from tfmodels.tokenizers.wordpiece import WordPieceTokenizer
from tfmodels.tokenizers.wordpiece_vocab import learn_wordpiece_vocab, write_vocab_file


def read_tsv(path, encoding="utf-8"):
    with open(path, encoding=encoding) as f:
        return list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    tokenizers = pytest.importorskip("tokenizers")
    oracle = tokenizers.Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    oracle.no_padding()
    return WordPieceTokenizer(str(minilm_dir / "vocab.txt"), lower_case=True), oracle


def pack(tokenizer, texts_a, texts_b=None, seq_length=128):
    """`[CLS] A [SEP] (B [SEP])` rows of seq_length, as every caller builds them."""
    return TextPacker(tokenizer, "bert", seq_length).encode(texts_a, texts_b)


def assert_same_as_oracle(ours, encodings, seq_length):
    for i, e in enumerate(encodings):
        n = len(e.ids)
        assert list(ours["input_ids"][i, :n]) == e.ids, (i, e.tokens)
        assert list(ours["segment_ids"][i, :n]) == e.type_ids, (i, e.tokens)
        assert list(ours["input_mask"][i]) == [1] * n + [0] * (seq_length - n)
        assert not ours["input_ids"][i, n:].any()


def test_single_sentences_agree_with_hf_tokenizer(minilm, shared_data):
    tokenizer, oracle = minilm
    sentences = [row[0] for row in read_tsv(shared_data / "glue/SST-2/train.tsv")[1:2001]]
    oracle.enable_truncation(128, strategy="longest_first")
    ours = {k: v.numpy() for k, v in pack(tokenizer, sentences, seq_length=128).items()}
    assert_same_as_oracle(ours, oracle.encode_batch(sentences), 128)


@pytest.mark.parametrize("seq_length", [128, 24])
def test_sentence_pairs_agree_with_hf_tokenizer(minilm, shared_data, seq_length):
    # MRPC's header starts with a UTF-8 BOM; its strings carry accents, '½' and '´', which
    # catch compatibility-normalisation differences. Length 24 exercises truncation.
    rows = read_tsv(shared_data / "glue/MRPC/train.tsv", encoding="utf-8-sig")[1:501]
    first, second = [r[3] for r in rows], [r[4] for r in rows]
    tokenizer, oracle = minilm
    oracle.enable_truncation(seq_length, strategy="longest_first")
    ours = {k: v.numpy() for k, v in pack(tokenizer, first, second, seq_length).items()}
    assert_same_as_oracle(ours, oracle.encode_batch(list(zip(first, second))), seq_length)


def test_graph_and_eager_agree(minilm, shared_data):
    tokenizer, _ = minilm
    rows = read_tsv(shared_data / "glue/MRPC/train.tsv", encoding="utf-8-sig")[1:201]
    first = tf.constant([r[3] for r in rows])
    second = tf.constant([r[4] for r in rows])
    graph = tf.function(lambda a, b: pack(tokenizer, a, b, seq_length=48))
    eager = pack(tokenizer, first, second, seq_length=48)
    for key, value in graph(first, second).items():
        assert value.shape == (200, 48)
        np.testing.assert_array_equal(value, eager[key])
    dataset = tf.data.Dataset.from_tensor_slices(first).batch(50).map(
        lambda t: pack(tokenizer, t, seq_length=48))
    from_data = np.concatenate([b["input_ids"].numpy() for b in dataset])
    np.testing.assert_array_equal(from_data, pack(tokenizer, first, seq_length=48)["input_ids"])


def test_words_group_pieces(minilm):
    tokenizer, _ = minilm
    words = tokenizer.tokenize_words(["unbelievable embeddings!", ""]).to_list()
    pieces = [[tokenizer.id_to_token(i) for i in word] for word in words[0]]
    assert pieces == [["unbelievable"], ["em", "##bed", "##ding", "##s"], ["!"]]
    assert words[1] == []
    # encode: the same ids as tokenize, as Python lists (the tokenizers' shared protocol).
    assert tokenizer.encode(["unbelievable embeddings!", ""]) == [
        [i for word in words[0] for i in word], []]
    assert tokenizer.family == "bert"
    with pytest.raises(TypeError, match="list of strings"):
        tokenizer.encode("one string")
    assert tokenizer.detokenize(tokenizer.tokenize(["embeddings here"])).numpy()[0] == \
        b"embeddings here"


def test_cased_vocabulary_keeps_case_and_accents(shared_data):
    tokenizer = WordPieceTokenizer(str(shared_data / "bert_vocab/bert-base-cased-vocab.txt"),
                                   lower_case=False)
    tokens = [tokenizer.id_to_token(i) for i in tokenizer.tokenize(["Café in Zürich"])[0]]
    assert tokens == ["Café", "in", "Zürich"]
    uncased = WordPieceTokenizer(str(shared_data / "bert_vocab/bert-base-uncased-vocab.txt"))
    tokens = [uncased.id_to_token(i) for i in uncased.tokenize(["Café in Zürich"])[0]]
    assert tokens == ["cafe", "in", "zurich"]


def test_empty_and_over_long_text(minilm):
    tokenizer, _ = minilm
    packed = pack(tokenizer, ["", "word " * 1000], seq_length=16)
    assert packed["input_ids"].numpy()[0].tolist()[:3] == [tokenizer.cls_id, tokenizer.sep_id, 0]
    assert packed["input_mask"].numpy()[1].sum() == 16


@pytest.mark.parametrize("lines, message", [
    (["[PAD]", "[UNK]", "[CLS]", "[SEP]"], r"missing special tokens \['\[MASK\]'\]"),
    (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "cat", "cat"], "line 7: token 'cat'"),
    ([], "is empty"),
])
def test_bad_vocabulary_files(tmp_path, lines, message):
    path = tmp_path / "vocab.txt"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    with pytest.raises(ValueError, match=message) as error:
        WordPieceTokenizer(str(path))
    assert str(path) in str(error.value)
    with pytest.raises(ValueError, match="does not exist"):
        WordPieceTokenizer(str(tmp_path / "missing.txt"))


def test_learned_vocabulary_round_trips(tmp_path, shared_data):
    with open(shared_data / "corpus/tinyshakespeare.txt", encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip()][:600]
    vocab = learn_wordpiece_vocab(lines, vocab_size=500)
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    # The learner aims at vocab_size within its slack (5%) plus the alphabet it must keep.
    assert 300 < len(vocab) <= 650 and len(set(vocab)) == len(vocab)
    path = tmp_path / "sub" / "vocab.txt"
    write_vocab_file(vocab, str(path))
    tokenizer = WordPieceTokenizer(str(path))
    assert tokenizer.vocab == vocab
    for word in ("the", "and", "citizen"):
        ids = tokenizer.tokenize([word])[0].numpy().tolist()
        assert len(ids) == 1 and tokenizer.id_to_token(ids[0]) == word
    assert tokenizer.unk_id not in tokenizer.tokenize([" ".join(lines[:50])])[0].numpy()
