"""Fine-tuning input encoders (finetune.features) with the real BERT uncased vocabulary and the
real GPT-1 BPE files: exact token layouts, GPT-1 input transforms, multiple choice, SQuAD
windows / labels / max-context / span decoding round trip on real questions, NER first-sub-token
labels on real CoNLL-2003 sentences, and the errors bad input raises."""
import csv
import json

import numpy as np
import pytest

from finetune.examples import ChoiceExample, SpanExample, TextExample, TokenExample
from finetune.features import (IGNORE_LABEL, best_span, decode_word_predictions, encode_examples,
                               predict_answers)
from tfmodels.preprocessing import TextPacker


@pytest.fixture(scope="module")
def wp(wordpiece):
    return wordpiece


@pytest.fixture(scope="module")
def gpt(gpt_bpe):
    return gpt_bpe


def tokens_of(wp, row):
    return [wp.id_to_token(int(i)) for i in row]


def squad_questions(shared_data, every=1, limit=None):
    with open(shared_data / "squad/train-v1.1-subset.json", encoding="utf-8") as f:
        data = json.load(f)["data"]
    examples = [SpanExample(qa["id"], qa["question"], p["context"],
                            tuple((a["text"], a["answer_start"]) for a in qa["answers"]))
                for article in data for p in article["paragraphs"] for qa in p["qas"]]
    return examples[::every][:limit]


def conll_sentences(shared_data, count):
    sentences, words, tags = [], [], []
    with open(shared_data / "conll2003/eng.train", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            if not fields or fields[0] == "-DOCSTART-":
                if words:
                    sentences.append(TokenExample(f"eng.train:{len(sentences)}", tuple(words),
                                                  tuple(tags)))
                    words, tags = [], []
                    if len(sentences) == count:
                        break
                continue
            words.append(fields[0])
            tags.append(fields[3])
    return sentences


# ---- classification and pairs -------------------------------------------------------------

def test_bert_pair_layout(wp):
    examples = [TextExample("t:1", "The cat sat.", "A dog ran!", "entailment"),
                TextExample("t:2", "Hello there", None, "not_entailment")]
    enc = encode_examples(examples, "classification", "bert", wp, 14,
                          label_names=("entailment", "not_entailment"))
    a = enc.arrays
    assert enc.input_keys == ("input_ids", "segment_ids", "input_mask")
    assert enc.label_keys == ("label",)
    assert tokens_of(wp, a["input_ids"][0]) == [
        "[CLS]", "the", "cat", "sat", ".", "[SEP]", "a", "dog", "ran", "!", "[SEP]",
        "[PAD]", "[PAD]", "[PAD]"]
    assert a["input_ids"][0, 0] == wp.cls_id
    assert a["input_ids"][0, 5] == wp.sep_id == a["input_ids"][0, 10]
    assert a["segment_ids"][0].tolist() == [0] * 6 + [1] * 5 + [0] * 3
    assert a["input_mask"][0].tolist() == [1] * 11 + [0] * 3
    assert tokens_of(wp, a["input_ids"][1][:5]) == ["[CLS]", "hello", "there", "[SEP]", "[PAD]"]
    assert a["segment_ids"][1].tolist() == [0] * 14
    assert a["label"].tolist() == [0, 1] and a["label"].dtype == np.int32
    assert all(v.shape[0] == 2 for v in a.values())
    assert a["input_ids"].dtype == np.int32


def test_bert_truncation_agrees_with_the_text_packer(wp, shared_data):
    with open(shared_data / "glue/RTE/train.tsv", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:201]
    examples = [TextExample(f"rte:{r[0]}", r[1], r[2], r[3]) for r in rows]
    enc = encode_examples(examples, "classification", "bert", wp, 32,
                          label_names=("entailment", "not_entailment"))
    reference = TextPacker(wp, "bert", 32).encode([e.text_a for e in examples],
                                                 [e.text_b for e in examples])
    assert (enc.arrays["input_mask"].sum(1) == 32).mean() > 0.5  # most pairs were truncated
    for key in ("input_ids", "segment_ids", "input_mask"):
        np.testing.assert_array_equal(enc.arrays[key], reference[key].numpy())


def test_regression_and_unlabelled(wp):
    pairs = [TextExample("s:1", "a man plays", "a man is playing", "3.8"),
             TextExample("s:2", "a cat", "a dog", 0.5)]
    enc = encode_examples(pairs, "regression", "bert", wp, 16)
    assert enc.arrays["label"].dtype == np.float32
    np.testing.assert_allclose(enc.arrays["label"], [3.8, 0.5])
    test = [TextExample("x:1", "some text"), TextExample("x:2", "more text")]
    enc = encode_examples(test, "classification", "bert", wp, 8, label_names=("0", "1"))
    assert enc.label_keys == () and "label" not in enc.arrays and enc.labels() == {}


def test_gpt_transforms(gpt):
    s, d, e = gpt.start_id, gpt.delimiter_id, gpt.classify_id
    premise, hypothesis = "The cat sat on the mat.", "A cat is sitting."
    ids_p, ids_h, ids_single = gpt.encode([premise, hypothesis, "What a great movie!"])
    examples = [TextExample("p:1", premise, hypothesis, "yes"),
                TextExample("p:2", "What a great movie!", None, "no")]
    enc = encode_examples(examples, "classification", "gpt", gpt, 24, label_names=("no", "yes"))
    a = enc.arrays
    assert enc.input_keys == ("input_ids", "input_mask", "classify_position")
    assert "segment_ids" not in a
    pair = a["input_ids"][0].tolist()
    n = len(ids_p) + len(ids_h) + 3
    assert pair[:n] == [s, *ids_p, d, *ids_h, e] and not any(pair[n:])
    assert a["classify_position"][0] == n - 1 and pair[a["classify_position"][0]] == e
    assert a["input_mask"][0].tolist() == [1] * n + [0] * (24 - n)
    single = a["input_ids"][1].tolist()
    assert single[:len(ids_single) + 2] == [s, *ids_single, e]
    assert single[a["classify_position"][1]] == e
    assert a["label"].tolist() == [1, 0]


def test_gpt_truncation_keeps_special_tokens(gpt):
    long_a = " ".join(["word"] * 40)
    enc = encode_examples([TextExample("g:1", long_a, "short one")], "classification", "gpt",
                          gpt, 12, label_names=("x",), symmetric=False)
    row = enc.arrays["input_ids"][0].tolist()
    b = gpt.encode(["short one"])[0]
    assert enc.arrays["input_mask"][0].sum() == 12
    assert row[0] == gpt.start_id and row[-1] == gpt.classify_id
    assert row[-len(b) - 2:] == [gpt.delimiter_id, *b, gpt.classify_id]  # the short text is kept
    assert enc.arrays["classify_position"][0] == 11


def test_gpt_symmetric_view_is_the_swap(gpt):
    a_text, b_text = "A man is playing a flute.", "A man plays the flute loudly in the park."
    examples = [TextExample("sts:1", a_text, b_text, 3.2),
                TextExample("sts:2", "short", " ".join(["long"] * 30), 1.0)]
    enc = encode_examples(examples, "regression", "gpt", gpt, 20, symmetric=True)
    ids, pos = enc.arrays["input_ids"], enc.arrays["classify_position"]
    assert ids.shape == enc.arrays["input_mask"].shape == (2, 2, 20) and pos.shape == (2, 2)
    s, d, e = gpt.start_id, gpt.delimiter_id, gpt.classify_id
    for i in range(2):
        first, second = ids[i, 0].tolist(), ids[i, 1].tolist()
        cut = first.index(d)
        text_a, text_b = first[1:cut], first[cut + 1:pos[i, 0]]
        assert second[:pos[i, 1] + 1] == [s, *text_b, d, *text_a, e]
        assert pos[i, 0] == pos[i, 1] and second[pos[i, 1]] == e == first[pos[i, 0]]
    ids_a, ids_b = gpt.encode([a_text, b_text])
    assert ids[0, 0, 1:pos[0, 0]].tolist() == [*ids_a, d, *ids_b]
    assert pos[1, 0] == 19  # the truncated pair still ends in the classify token


# ---- multiple choice ----------------------------------------------------------------------

def test_multiple_choice_layouts(wp, gpt):
    ex = ChoiceExample("swag:1", "She opened the door.", "Then she",
                       ("walked in.", "flew away.", "sat down.", "laughed."), label=2)
    bert = encode_examples([ex, ex], "multiple_choice", "bert", wp, 16)
    assert bert.arrays["input_ids"].shape == (2, 4, 16) and bert.arrays["label"].tolist() == [2, 2]
    assert tokens_of(wp, bert.arrays["input_ids"][0, 1, :13]) == [
        "[CLS]", "she", "opened", "the", "door", ".", "[SEP]", "then", "she", "flew", "away", ".",
        "[SEP]"]
    assert bert.arrays["segment_ids"][0, 1, :13].tolist() == [0] * 7 + [1] * 6

    g = encode_examples([ex], "multiple_choice", "gpt", gpt, 16)
    context, question, ending = gpt.encode([ex.context, ex.question, ex.endings[3]])
    pos = g.arrays["classify_position"]
    assert pos.shape == (1, 4)
    assert g.arrays["input_ids"][0, 3, :pos[0, 3] + 1].tolist() == [
        gpt.start_id, *context, *question, gpt.delimiter_id, *ending, gpt.classify_id]
    # A long article (RACE) is what gets trimmed: the question and the option stay whole.
    race = ChoiceExample("race:1", " ".join(["the article goes on"] * 50), "What is it about?",
                         ("cats", "dogs", "birds", "fish"), label=0)
    question = gpt.encode([race.question])[0]
    for model, tok in (("bert", wp), ("gpt", gpt)):
        row = encode_examples([race], "multiple_choice", model, tok, 24).arrays["input_ids"][0, 1]
        tail = (wp.tokenize([race.question + " dogs"])[0].numpy().tolist() + [wp.sep_id]
                if model == "bert" else
                [*question, gpt.delimiter_id, *gpt.encode(["dogs"])[0], gpt.classify_id])
        assert row.tolist()[-len(tail):] == tail


def test_multiple_choice_on_story_cloze(wp, gpt, shared_data):
    with open(shared_data / "storycloze/cloze_test_val__spring2016.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:30]
    examples = [ChoiceExample(r["InputStoryid"],
                              " ".join(r[f"InputSentence{i}"] for i in range(1, 5)), "",
                              (r["RandomFifthSentenceQuiz1"], r["RandomFifthSentenceQuiz2"]),
                              int(r["AnswerRightEnding"]) - 1) for r in rows]
    for model, tok in (("bert", wp), ("gpt", gpt)):
        enc = encode_examples(examples, "multiple_choice", model, tok, 48)
        assert enc.arrays["input_ids"].shape == (30, 2, 48)
        assert enc.arrays["input_mask"].shape == (30, 2, 48)
        assert enc.arrays["label"].shape == (30,)
    pos = enc.arrays["classify_position"]
    taken = np.take_along_axis(enc.arrays["input_ids"], pos[..., None], axis=2)
    assert (taken == gpt.classify_id).all()
    assert (enc.arrays["input_ids"][..., 0] == gpt.start_id).all()
    assert ((enc.arrays["input_ids"] == gpt.delimiter_id).sum(-1) == 1).all()


# ---- SQuAD --------------------------------------------------------------------------------

def test_squad_windows_labels_and_max_context(wp):
    context = "zero one two three four five six seven eight nine"
    answer_start = context.index("four five")
    ex = SpanExample("q1", "what", context, (("four five", answer_start),))
    # 1-piece question: windows of 10 - 1 - 3 = 6 pieces every 3 -> [0-5], [3-8], [6-9].
    enc = encode_examples([ex], "span", "bert", wp, 10, doc_stride=3)
    a, meta = enc.arrays, enc.metadata
    assert len(enc) == 3 and [m.window_start for m in meta] == [0, 3, 6]
    assert a["start_position"].tolist() == [7, 4, 0] and a["end_position"].tolist() == [8, 5, 0]
    assert tokens_of(wp, a["input_ids"][1]) == [
        "[CLS]", "what", "[SEP]", "three", "four", "five", "six", "seven", "eight", "[SEP]"]
    assert a["segment_ids"][2].tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 0, 0]
    # Hand-checked _check_is_max_context: score = min(left, right) + 0.01 * length.
    assert meta[0].token_is_max_context.tolist() == [True] * 5 + [False]
    assert meta[1].token_is_max_context.tolist() == [False, False, True, True, True, False]
    assert meta[2].token_is_max_context.tolist() == [False, False, True, True]
    assert meta[1].char_span(4) == (answer_start, answer_start + 4)
    assert meta[1].token_to_char[3].tolist() == [context.index("three"), context.index("three") + 5]
    assert meta[1].token_to_char[0].tolist() == [-1, -1] and not meta[1].is_context(9)


def test_squad_long_context_windows_detokenise_to_answer(wp, shared_data):
    examples = [ex for ex in squad_questions(shared_data, limit=40) if len(ex.context) > 700][:10]
    enc = encode_examples(examples, "span", "bert", wp, 64, doc_stride=16, max_query_length=20)
    a = enc.arrays
    by_qid = {ex.qid: ex for ex in examples}
    # The tokenized answer, detokenised: what the labelled pieces must read as.
    expected = dict(zip(by_qid, wp.detokenize(wp.tokenize([ex.answers[0][0] for ex in examples]))
                        .numpy().tolist()))
    assert (np.bincount(a["example_index"]) >= 4).all()  # a long context in small windows
    labelled = set()
    for row, feature in enumerate(enc.metadata):
        start, end = a["start_position"][row], a["end_position"][row]
        assert (start == 0) == (end == 0) and a["input_mask"][row].sum() <= 64
        if start:
            assert feature.is_context(start) and feature.is_context(end) and start <= end
            span = wp.detokenize([a["input_ids"][row, start:end + 1]]).numpy()[0]
            assert span == expected[feature.qid]
            labelled.add(feature.qid)
        else:  # label 0 only when this window does not hold the whole answer
            text, begin = by_qid[feature.qid].answers[0]
            first = feature.char_span(feature.context_offset)[0]
            last = feature.char_span(feature.context_offset + feature.window_length - 1)[1]
            assert not first <= begin < begin + len(text) <= last
    assert labelled == set(by_qid)  # every answer is labelled in at least one window


def test_best_span_recovers_real_answers(wp, shared_data):
    examples = squad_questions(shared_data, every=20)  # ~600 questions from all 44 articles
    enc = encode_examples(examples, "span", "bert", wp, 128, doc_stride=32)
    a = enc.arrays
    rows = np.arange(len(enc))
    start_logits = np.zeros(a["input_ids"].shape, np.float32)
    end_logits = np.zeros(a["input_ids"].shape, np.float32)
    start_logits[rows, a["start_position"]] = 1.0
    end_logits[rows, a["end_position"]] = 1.0
    predictions = predict_answers(start_logits, end_logits, enc.metadata, max_answer_length=64)
    exact = [predictions[ex.qid].text == ex.answers[0][0] for ex in examples]
    # Misses can only be answers that start or end inside a word piece ("Tibet" of "tibetan").
    assert np.mean(exact) >= 0.98, [(ex.answers[0][0], predictions[ex.qid].text)
                                     for ex, ok in zip(examples, exact) if not ok]
    assert len(enc) > len(examples)  # several windows per question


def test_best_span_v2_null_threshold(wp):
    context = "The quick brown fox jumps over the lazy dog."
    ex = SpanExample("v2q", "what jumps?", context, (), is_impossible=True)
    enc = encode_examples([ex], "span", "bert", wp, 32)
    assert enc.arrays["start_position"].tolist() == enc.arrays["end_position"].tolist() == [0]
    meta = enc.metadata[0]
    fox = meta.context_offset + 3  # the, quick, brown, fox
    start, end = np.zeros(32), np.zeros(32)
    start[0], end[0] = 2.0, 2.0        # null score 4
    start[fox], end[fox] = 1.5, 1.5    # best span "fox", score 3
    pred = best_span([start], [end], [meta], version_2=True, null_threshold=0.0)
    assert pred.text == "" and pred.null_score == 4.0 and pred.score == 3.0
    assert pred.score_diff == pytest.approx(1.0) and pred.nbest[0][0] == "fox"
    assert best_span([start], [end], [meta], version_2=True, null_threshold=1.5).text == "fox"
    assert best_span([start], [end], [meta], version_2=False).text == "fox"
    # The null score is the minimum over windows; [CLS] itself is never a span.
    start2 = start.copy()
    start2[0] = -5.0
    pred = best_span([start, start2], [end, end], [meta, meta], version_2=True)
    assert pred.null_score == -3.0 and pred.text == "fox"
    # Spans longer than max_answer_length or ending before they start are never chosen.
    start3, end3 = np.zeros(32), np.zeros(32)
    start3[fox], end3[fox - 1], end3[fox + 3] = 5.0, 5.0, 4.0
    assert best_span([start3], [end3], [meta]).text == "fox jumps over the"
    assert best_span([start3], [end3], [meta], max_answer_length=2).text != "fox jumps over the"


# ---- NER ----------------------------------------------------------------------------------

def test_ner_first_subtoken_labels_round_trip(wp, shared_data):
    sentences = conll_sentences(shared_data, 300)
    tags = sorted({t for s in sentences for t in s.tags})
    enc = encode_examples(sentences, "token_classification", "bert", wp, 40, label_names=tags)
    a = enc.arrays
    assert enc.label_keys == ("label_ids", "label_mask")
    pieces = dict(zip(sorted({w for s in sentences for w in s.words}),
                      wp.tokenize(sorted({w for s in sentences for w in s.words})).to_list()))
    fits = truncated = multi_piece = 0
    for n, (sentence, feature) in enumerate(zip(sentences, enc.metadata)):
        labels, mask = a["label_ids"][n], a["label_mask"][n]
        positions = feature.word_positions
        assert (mask == (labels != IGNORE_LABEL)).all() and mask.sum() == len(positions)
        for w, p in enumerate(positions):
            assert a["input_ids"][n, p] == pieces[sentence.words[w]][0]  # the FIRST piece
            assert tags[labels[p]] == sentence.tags[w]
            multi_piece += len(pieces[sentence.words[w]]) > 1
        assert labels[0] == IGNORE_LABEL  # [CLS]
        decoded = decode_word_predictions(np.where(labels < 0, 0, labels), feature)
        assert len(decoded) == len(sentence.words)
        if feature.num_dropped_words == 0:
            fits += 1
            assert decoded == list(sentence.tags)
        else:
            truncated += 1
            kept = len(positions)
            assert decoded[:kept] == list(sentence.tags[:kept])
            assert decoded[kept:] == ["O"] * feature.num_dropped_words
            assert a["input_mask"][n].sum() == 40
    assert fits > 250 and truncated > 0 and multi_piece > 50
    # A word that tokenizes to nothing keeps a position, as [UNK].
    odd = encode_examples([TokenExample("odd", ("EU", "\u200b", "rejects"), ("B-ORG", "O", "O"))],
                          "token_classification", "bert", wp, 8, label_names=("O", "B-ORG"))
    assert odd.metadata[0].word_positions.tolist() == [1, 2, 3]
    assert odd.arrays["input_ids"][0, 2] == wp.unk_id
    assert odd.arrays["label_ids"][0].tolist() == [-1, 1, 0, 0, -1, -1, -1, -1]
    # Logits decode like ids.
    logits = np.eye(len(tags))[np.where(a["label_ids"][0] < 0, 0, a["label_ids"][0])]
    assert decode_word_predictions(logits, enc.metadata[0]) == list(sentences[0].tags)


# ---- errors -------------------------------------------------------------------------------

def test_bad_input_errors_name_the_example(wp, gpt):
    names = ("no", "yes")
    with pytest.raises(ValueError, match=r"'t:7'.*text_b is empty"):
        encode_examples([TextExample("t:7", "fine", "  ", "yes")], "classification", "bert", wp,
                        16, label_names=names)
    with pytest.raises(ValueError, match=r"'t:8'.*label 'maybe' is not one of"):
        encode_examples([TextExample("t:8", "fine", None, "maybe")], "classification", "bert",
                        wp, 16, label_names=names)
    with pytest.raises(ValueError, match=r"'t:9'.*no tokens"):
        encode_examples([TextExample("t:9", "\x00\x01", None, "no")], "classification", "bert",
                        wp, 16, label_names=names)
    with pytest.raises(ValueError, match=r"'t:2'.*regression label 'high' is not a number"):
        encode_examples([TextExample("t:1", "a", "b", 1.0), TextExample("t:2", "a", "b", "high")],
                        "regression", "bert", wp, 16)
    with pytest.raises(ValueError, match=r"'t:2'.*has no label but"):
        encode_examples([TextExample("t:1", "a", None, "no"), TextExample("t:2", "b")],
                        "classification", "bert", wp, 16, label_names=names)
    with pytest.raises(ValueError, match=r"seq_length 4 is too short.*at least 5"):
        encode_examples([TextExample("t:1", "a", "b", "no")], "classification", "bert", wp, 4,
                        label_names=names)
    with pytest.raises(ValueError, match=r"'sq1'.*answer 'fox' does not match the context at "
                                         r"character 3"):
        encode_examples([SpanExample("sq1", "what?", "a fox ran", (("fox", 3),))], "span", "bert",
                        wp, 32)
    with pytest.raises(ValueError, match=r"'sq2'.*seq_length 12 leaves no room"):
        encode_examples([SpanExample("sq2", "who is the very long question asker here?",
                                     "a fox ran", (("fox", 3),))], "span", "bert", wp, 12)
    with pytest.raises(ValueError, match=r"'c:2'.*has 3 endings; expected 2"):
        encode_examples([ChoiceExample("c:1", "ctx", "", ("a", "b"), 0),
                         ChoiceExample("c:2", "ctx", "", ("a", "b", "c"), 0)],
                        "multiple_choice", "bert", wp, 16)
    with pytest.raises(ValueError, match=r"'c:1'.*label 5 is not an ending index"):
        encode_examples([ChoiceExample("c:1", "ctx", "", ("a", "b"), 5)], "multiple_choice",
                        "gpt", gpt, 16)
    with pytest.raises(ValueError, match=r"'n:1'.*has 2 words but 1 tags"):
        encode_examples([TokenExample("n:1", ("EU", "rejects"), ("B-ORG",))],
                        "token_classification", "bert", wp, 16, label_names=("O", "B-ORG"))
    with pytest.raises(ValueError, match=r"'n:2'.*label 'I-XYZ' is not one of"):
        encode_examples([TokenExample("n:2", ("EU",), ("I-XYZ",))], "token_classification",
                        "bert", wp, 16, label_names=("O", "B-ORG"))
    with pytest.raises(ValueError, match="GPT-1 has no span"):
        encode_examples([], "span", "gpt", gpt, 16)
    with pytest.raises(ValueError, match=r"unknown options \['doc_strid'\]"):
        encode_examples([], "span", "bert", wp, 16, doc_strid=3)
    with pytest.raises(ValueError, match="symmetric=True is GPT-1's"):
        encode_examples([TextExample("t:1", "a", "b", 1.0)], "regression", "bert", wp, 16,
                        symmetric=True)
    with pytest.raises(ValueError, match=r"'t:3'.*symmetric=True needs a text pair"):
        encode_examples([TextExample("t:3", "a", None, 1.0)], "regression", "gpt", gpt, 16,
                        symmetric=True)
    with pytest.raises(ValueError, match="reads text through a WordPieceTokenizer"):
        encode_examples([TextExample("t:1", "a", None, "no")], "classification", "bert", gpt, 16,
                        label_names=names)
