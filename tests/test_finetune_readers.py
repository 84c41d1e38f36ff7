"""Readers on the real files in shared/data, on small synthetic files for tasks without real
data here, and on malformed files: every error must name the file, the place and the reason."""
import json
import pathlib

import pytest

from finetune.examples import ChoiceExample, SpanExample, TextExample, TokenExample
from finetune.metrics import iob1_to_iob2
from finetune.readers import (GLUE_FORMATS, DataError, holdout_split, read_conll, read_glue_tsv,
                              read_race, read_squad, read_story_cloze, read_swag, read_tfds_glue)
from finetune.tasks import get_task


def _write(path: pathlib.Path, text: str, bom: bool = False) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(("\ufeff" if bom else "") + text, encoding="utf-8")
    return path


def _tsv(*rows) -> str:
    return "".join("\t".join(r) + "\n" for r in rows)


# ------------------------------------------------------------------ real data

@pytest.mark.parametrize("task,folder,count,first_label", [
    ("cola", "CoLA", 8551, "1"),
    ("sst2", "SST-2", 67349, "0"),
    ("mrpc", "MRPC", 3668, "1"),
    ("rte", "RTE", 2490, "not_entailment"),
    ("stsb", "STS-B", 5749, 5.0),
    ("wnli", "WNLI", 635, "1"),
])
def test_real_glue_train_files(shared_data, task, folder, count, first_label):
    spec = get_task(task)
    examples = spec.read(str(shared_data / "glue" / folder), "train")
    assert len(examples) == count
    assert all(isinstance(e, TextExample) for e in examples)
    assert examples[0].label == first_label
    assert (examples[0].text_b is not None) == spec.is_pair
    if spec.label_names:
        assert {e.label for e in examples} == set(spec.label_names)
    else:
        assert all(0.0 <= e.label <= 5.0 for e in examples)


def test_real_glue_details(shared_data):
    glue = shared_data / "glue"
    cola = get_task("cola").read(str(glue / "CoLA"), "train")
    assert sum(e.label == "1" for e in cola) == 6023      # counted with cut -f2 | sort | uniq -c
    # MRPC: the BOM must not leak into the first column name; quotes stay in the text.
    mrpc = get_task("mrpc").read(str(glue / "MRPC"), "train")
    assert mrpc[0].text_a.startswith('Amrozi accused his brother , whom he called " the witness "')
    stsb = get_task("stsb").read(str(glue / "STS-B"), "train")
    assert (stsb[1].text_a, stsb[1].text_b, stsb[1].label) == (
        "A man is playing a large flute.", "A man is playing a flute.", 3.8)
    test = get_task("sst2").read(str(glue / "SST-2"), "test")
    assert len(test) == 1821 and test[0].guid == "0" and test[0].label is None
    assert test[0].text_a == "uneasy mishmash of styles and genres ."


def test_real_squad_subset(shared_data):
    examples = get_task("squad_v1").read(str(shared_data / "squad" / "train-v1.1-subset.json"), "train")
    assert len(examples) == 11877
    first = examples[0]
    assert isinstance(first, SpanExample) and first.qid == "5733be284776f41900661182"
    assert first.answers == (("Saint Bernadette Soubirous", 515),)
    assert not any(e.is_impossible for e in examples)
    assert len({e.qid for e in examples}) == 11877


def test_real_story_cloze(shared_data):
    examples = get_task("story_cloze").read(str(shared_data / "storycloze"), "train")
    assert len(examples) == 1871
    first = examples[0]
    assert first.context.startswith("Rick grew up in a troubled household. He never found good support")
    assert first.endings == ("He is happy now.", "He joined a gang.") and first.label == 0
    assert {e.label for e in examples} == {0, 1}


def test_real_conll2003(shared_data):
    train = read_conll(str(shared_data / "conll2003" / "eng.train"))
    assert len(train) == 14041
    assert train[0].words[:3] == ("EU", "rejects", "German")
    assert train[0].tags[:3] == ("I-ORG", "O", "I-MISC")           # IOB1 as in the file
    task = get_task("conll2003")
    dev = task.read(str(shared_data / "conll2003"), "dev")          # eng.testa, as IOB2
    assert len(dev) == 3250 and isinstance(dev[0], TokenExample)
    # IOB2: every entity starts with B- (IOB1 -> IOB2 is then a no-op), unlike the IOB1 file.
    assert all(list(e.tags) == iob1_to_iob2(e.tags) for e in dev)
    assert sum(t.startswith("B-") for e in dev for t in e.tags) > 5000
    assert {t for e in dev for t in e.tags} <= set(task.label_names)


# ------------------------------------------------------------------ synthetic files

def test_qqp_and_glue_test_layouts(tmp_path):
    qqp = _write(tmp_path / "qqp" / "train.tsv", _tsv(
        ("id", "qid1", "qid2", "question1", "question2", "is_duplicate"),
        ("7", "1", "2", 'How do I "learn python?', "Best way to learn python?", "1"),
        ("8", "3", "4", "Why?", "Why not?", "0")))
    ex = get_task("qqp").read(str(qqp.parent), "train")
    assert ex == [TextExample("7", 'How do I "learn python?', "Best way to learn python?", "1"),
                  TextExample("8", "Why?", "Why not?", "0")]
    _write(tmp_path / "qqp" / "test.tsv", _tsv(("id", "question1", "question2"), ("0", "a?", "b?")))
    assert get_task("qqp").read(str(qqp.parent), "test") == [TextExample("0", "a?", "b?", None)]
    # CoLA: headerless train, `index sentence` test; MRPC test with a BOM.
    _write(tmp_path / "cola" / "test.tsv", _tsv(("index", "sentence"), ("0", "Bill left.")))
    assert get_task("cola").read(str(tmp_path / "cola"), "test") == [TextExample("0", "Bill left.")]
    _write(tmp_path / "mrpc" / "test.tsv", _tsv(("index", "#1 ID", "#2 ID", "#1 String", "#2 String"),
                                                ("0", "1", "2", "a .", "b .")), bom=True)
    assert get_task("mrpc").read(str(tmp_path / "mrpc"), "test") == [TextExample("0", "a .", "b .")]


MNLI_TRAIN_HEADER = ("index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
                     "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label")
MNLI_DEV_HEADER = MNLI_TRAIN_HEADER[:10] + ("label1", "label2", "label3", "label4", "label5", "gold_label")


def test_mnli_matched_and_mismatched(tmp_path):
    parse = ("(x)", "(y)", "(X)", "(Y)")
    _write(tmp_path / "train.tsv", _tsv(MNLI_TRAIN_HEADER,
                                        ("0", "1", "1e", "fiction") + parse + ("P one", "H one", "neutral", "neutral")))
    _write(tmp_path / "dev_matched.tsv", _tsv(MNLI_DEV_HEADER, (
        "0", "2", "2c", "slate") + parse + ("P two", "H two") + ("contradiction",) * 5 + ("contradiction",)))
    _write(tmp_path / "dev_mismatched.tsv", _tsv(MNLI_DEV_HEADER, (
        "5", "3", "3e", "letters") + parse + ("P three", "H three") + ("entailment",) * 5 + ("entailment",)))
    assert get_task("mnli").read(str(tmp_path), "train") == [TextExample("0", "P one", "H one", "neutral")]
    assert get_task("mnli").read(str(tmp_path), "dev") == [TextExample("0", "P two", "H two", "contradiction")]
    assert get_task("mnli_mismatched").read(str(tmp_path), "dev") == [
        TextExample("5", "P three", "H three", "entailment")]


def test_qnli_snli_scitail(tmp_path):
    _write(tmp_path / "qnli" / "train.tsv", _tsv(("index", "question", "sentence", "label"),
                                                 ("0", "Who?", "Him.", "entailment"),
                                                 ("1", "Where?", "Then.", "not_entailment")))
    assert [e.label for e in get_task("qnli").read(str(tmp_path / "qnli"), "train")] == [
        "entailment", "not_entailment"]
    snli_header = ("index", "captionID", "pairID", "sentence1_binary_parse", "sentence2_binary_parse",
                   "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label")
    parse = ("(a)", "(b)", "(A)", "(B)")
    _write(tmp_path / "snli" / "train.tsv", _tsv(
        snli_header,
        ("0", "c1", "p1") + parse + ("A man.", "A person.", "entailment", "entailment"),
        ("1", "c1", "p2") + parse + ("A man.", "A cat.", "neutral", "-"),          # no consensus: skipped
        ("2", "c1", "p3") + parse + ("A man.", "Nobody.", "contradiction", "contradiction")))
    snli = get_task("snli").read(str(tmp_path / "snli"), "train")
    assert [(e.guid, e.label) for e in snli] == [("p1", "entailment"), ("p3", "contradiction")]
    _write(tmp_path / "scitail" / "scitail_1.0_dev.tsv", "Plants grow.\tPlants get bigger.\tentails\n"
                                                         "Rocks sit.\tRocks fly.\tneutral\n")
    sci = get_task("scitail").read(str(tmp_path / "scitail"), "dev")
    assert sci[1] == TextExample("scitail_1.0_dev.tsv:2", "Rocks sit.", "Rocks fly.", "neutral")


SWAG_HEADER = ",video-id,fold-ind,startphrase,sent1,sent2,gold-source,ending0,ending1,ending2,ending3,label\n"


def test_swag(tmp_path):
    path = _write(tmp_path / "train.csv", SWAG_HEADER +
                  '0,lsmdc_1,5,"He opens it, slowly. He",'
                  '"He opens it, slowly.",He,gold,looks.,"runs, fast.",sits.,sings.,1\n')
    (ex,) = get_task("swag").read(str(tmp_path), "train")
    assert ex == ChoiceExample(guid="train.csv:2", context="He opens it, slowly.", question="He",
                               endings=("looks.", "runs, fast.", "sits.", "sings."), label=1)
    test = _write(tmp_path / "test.csv", SWAG_HEADER.replace(",label", "") +
                  "0,lsmdc_2,6,x y,x,y,gen,a,b,c,d\n")
    assert read_swag(str(test), require_label=False)[0].label is None
    with pytest.raises(DataError, match=r"test\.csv:line 1: missing column 'label'"):
        read_swag(str(test))
    assert path.exists()


def _race_article(path, answers=("B", "D"), options=None):
    doc = {"id": path.name, "article": "Tom has a cat. It is black.",
           "questions": ["What does Tom have?", "The cat is _ ."],
           "options": options or [["a dog", "a cat", "a cow", "a pig"], ["white", "red", "blue", "black"]],
           "answers": list(answers)}
    _write(path, json.dumps(doc))


def test_race(tmp_path):
    _race_article(tmp_path / "train" / "middle" / "2.txt")
    _race_article(tmp_path / "train" / "high" / "1.txt", answers=("A", "C"))
    examples = get_task("race").read(str(tmp_path), "train")
    # sorted paths: high/ before middle/
    assert [(e.guid, e.label) for e in examples] == [("1.txt-0", 0), ("1.txt-1", 2), ("2.txt-0", 1), ("2.txt-1", 3)]
    assert examples[1].question == "The cat is _ ." and examples[1].endings[3] == "black"
    assert examples[0].context == "Tom has a cat. It is black."


def _squad(path, qas, context="Denver Broncos won Super Bowl 50."):
    _write(path, json.dumps({"version": "v2.0", "data": [
        {"title": "t", "paragraphs": [{"context": context, "qas": qas}]}]}))
    return str(path)


def test_squad_v2(tmp_path):
    path = _squad(tmp_path / "train-v2.0.json", [
        {"id": "q1", "question": "Who won?", "is_impossible": False,
         "answers": [{"text": "Denver Broncos", "answer_start": 0}]},
        {"id": "q2", "question": "Who lost?", "is_impossible": True, "answers": [],
         "plausible_answers": [{"text": "Super Bowl", "answer_start": 19}]}])
    q1, q2 = get_task("squad_v2").read(str(tmp_path), "train")
    assert q1 == SpanExample("q1", "Who won?", "Denver Broncos won Super Bowl 50.", (("Denver Broncos", 0),), False)
    assert q2.is_impossible and q2.answers == ()
    assert read_squad(path)[0] == q1


def test_tfds_glue_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=3):
        cola = read_tfds_glue("cola", "train")
        mm = read_tfds_glue("mnli_mismatched", "dev")
        stsb = read_tfds_glue("stsb", "train")
    assert len(cola) == 3 and all(e.label in ("0", "1") and e.text_b is None for e in cola)
    assert all(e.guid.startswith("glue/mnli/validation_mismatched-") for e in mm)
    assert all(e.label in ("entailment", "neutral", "contradiction") and e.text_b for e in mm)
    assert all(isinstance(e.label, float) for e in stsb)


def test_tfds_glue_maps_label_ids_and_test_minus_one():
    tfds = pytest.importorskip("tensorflow_datasets")
    import tensorflow as tf

    def as_dataset(self, *args, **kwargs):
        return tf.data.Dataset.from_tensor_slices({
            "sentence1": [b"p0", b"p1", b"p2"], "sentence2": [b"h0", b"h1", b"h2"],
            "label": tf.constant([0, 1, -1], tf.int64), "idx": tf.constant([10, 11, 12], tf.int32)})

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        rte = read_tfds_glue("rte", "test")
    assert rte == [TextExample("glue/rte/test-10", "p0", "h0", "entailment"),
                   TextExample("glue/rte/test-11", "p1", "h1", "not_entailment"),
                   TextExample("glue/rte/test-12", "p2", "h2", None)]
    # Our label order is TFDS's class order (index i == TFDS label i).
    configs = {c.name: c for c in tfds.builder_cls("glue").BUILDER_CONFIGS}
    for task in ("mnli", "qnli", "rte"):
        assert GLUE_FORMATS[task].label_names == tuple(configs[task].label_classes)
    for task, positive in (("cola", "acceptable"), ("sst2", "positive"), ("mrpc", "equivalent"),
                           ("qqp", "duplicate"), ("wnli", "entailment")):
        assert configs[task].label_classes[1] == positive and GLUE_FORMATS[task].label_names[1] == "1"


def test_holdout_split_keeps_the_last_fraction():
    train, held = holdout_split(list(range(100)))
    assert train == list(range(90)) and held == list(range(90, 100))
    train, held = holdout_split(list(range(8551)), 0.1)
    assert len(held) == 855 and held[-1] == 8550 and len(train) + len(held) == 8551
    assert holdout_split([1, 2, 3]) == ([1, 2], [3])              # at least one held out
    with pytest.raises(ValueError, match="fraction"):
        holdout_split([1, 2], 1.0)


def test_holdout_split_keeps_groups_whole(shared_data):
    # Cut inside group 2 -> moves back to its start; a single group -> forward to its end.
    train, held = holdout_split([1, 1, 2, 2, 2, 3], 0.5, group=lambda x: x)
    assert (train, held) == ([1, 1], [2, 2, 2, 3])
    train, held = holdout_split([5, 5, 5, 6], 0.5, group=lambda x: x)
    assert (train, held) == ([5, 5, 5], [6])
    assert holdout_split([7, 7, 7, 7], 0.5, group=lambda x: x) == ([7, 7], [7, 7])
    # Real SQuAD subset: no article has questions on both sides of the cut.
    examples = get_task("squad_v1").read(str(shared_data / "squad" / "train-v1.1-subset.json"),
                                         "train")
    train, held = holdout_split(examples, 0.1, group=lambda e: e.article)
    assert {e.article for e in train}.isdisjoint({e.article for e in held})
    assert 0.05 < len(held) / len(examples) < 0.2
    assert len({e.article for e in examples}) == 44


# ------------------------------------------------------------------ malformed files

def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(ValueError) as info:
        fn(*args, **kwargs)
    assert isinstance(info.value, DataError)
    return str(info.value)


def test_glue_errors_name_file_line_and_reason(tmp_path):
    rte_header = ("index", "sentence1", "sentence2", "label")
    missing = _write(tmp_path / "missing.tsv", _tsv(("index", "sentence1", "label"), ("0", "a", "entailment")))
    msg = _error(read_glue_tsv, str(missing), GLUE_FORMATS["rte"])
    assert msg.startswith(f"{missing}:line 1: missing column 'sentence2'")
    count = _write(tmp_path / "count.tsv", "src\t1\t\tGood.\nsrc\t0\tBad.\n")
    assert _error(read_glue_tsv, str(count), GLUE_FORMATS["cola"]) == (
        f"{count}:line 2: expected 4 tab-separated fields, found 3")
    label = _write(tmp_path / "label.tsv", _tsv(rte_header, ("0", "a", "b", "entailment"), ("1", "a", "b", "maybe")))
    msg = _error(read_glue_tsv, str(label), GLUE_FORMATS["rte"])
    assert msg.startswith(f"{label}:line 3: unknown label 'maybe'")
    stsb_header = ("index", "genre", "filename", "year", "old_index", "source1", "source2",
                   "sentence1", "sentence2", "score")
    score = _write(tmp_path / "score.tsv", _tsv(stsb_header, ("0", "g", "f", "y", "1", "n", "n", "a", "b", "high")))
    assert _error(read_glue_tsv, str(score), GLUE_FORMATS["stsb"]) == f"{score}:line 2: score 'high' is not a number"
    score.write_text(_tsv(stsb_header, ("0", "g", "f", "y", "1", "n", "n", "a", "b", "7.5")))
    assert "outside (0.0, 5.0)" in _error(read_glue_tsv, str(score), GLUE_FORMATS["stsb"])
    empty = _write(tmp_path / "empty.tsv", "")
    assert _error(read_glue_tsv, str(empty), GLUE_FORMATS["sst2"]) == f"{empty}: file is empty"
    header_only = _write(tmp_path / "header.tsv", "sentence\tlabel\n")
    assert "no examples" in _error(read_glue_tsv, str(header_only), GLUE_FORMATS["sst2"])
    # A train split must have its labels; a test file may lack them.
    nolabel = _write(tmp_path / "nolabel.tsv", _tsv(("index", "sentence"), ("0", "x")))
    assert "missing column 'label'" in _error(read_glue_tsv, str(nolabel), GLUE_FORMATS["sst2"])


def test_squad_errors_name_json_path_and_id(tmp_path):
    bad_span = _squad(tmp_path / "span.json", [
        {"id": "q9", "question": "Who?", "answers": [{"text": "Denver Broncos", "answer_start": 1}]}])
    msg = _error(read_squad, bad_span)
    assert msg.startswith(f"{bad_span}:data[0].paragraphs[0].qas[0] (id q9).answers[0]: answer 'Denver Broncos' "
                          "is not at context offset 1")
    impossible = _squad(tmp_path / "imp.json", [
        {"id": "q1", "question": "?", "is_impossible": True, "answers": [{"text": "Denver", "answer_start": 0}]}])
    assert "is_impossible is true" in _error(read_squad, impossible)
    dup = _squad(tmp_path / "dup.json", [{"id": "q1", "question": "?", "answers": [{"text": "D", "answer_start": 0}]}] * 2)
    assert "(id q1): duplicate question id" in _error(read_squad, dup)
    noans = _squad(tmp_path / "noans.json", [{"id": "q1", "question": "?", "answers": []}])
    assert "answerable question without answers" in _error(read_squad, noans)
    assert read_squad(noans, require_answers=False)[0].answers == ()
    missing = _write(tmp_path / "missing.json", json.dumps({"data": [{"paragraphs": [{"qas": []}]}]}))
    assert _error(read_squad, str(missing)) == f"{missing}:data[0].paragraphs[0]: missing field 'context'"
    broken = _write(tmp_path / "broken.json", '{"data": [')
    assert "invalid JSON" in _error(read_squad, str(broken))
    empty = _write(tmp_path / "empty.json", "")
    assert _error(read_squad, str(empty)) == f"{empty}: file is empty"


def test_choice_errors(tmp_path):
    cloze_header = ("InputStoryid,InputSentence1,InputSentence2,InputSentence3,InputSentence4,"
                    "RandomFifthSentenceQuiz1,RandomFifthSentenceQuiz2,AnswerRightEnding\n")
    cloze = _write(tmp_path / "cloze.csv", cloze_header + "id1,a,b,c,d,e1,e2,1\nid2,a,b,c,d,e1,e2,3\n")
    assert _error(read_story_cloze, str(cloze)).startswith(f"{cloze}:line 3: unknown label '3'")
    cloze.write_text(cloze_header + "id1,a,b,c,d,e1,1\n")
    assert _error(read_story_cloze, str(cloze)) == f"{cloze}:line 2: expected 8 comma-separated fields, found 7"
    empty = _write(tmp_path / "empty.csv", "")
    assert _error(read_swag, str(empty)) == f"{empty}: file is empty"
    swag = _write(tmp_path / "swag.csv", SWAG_HEADER + "0,v,1,x y,x,y,g,a,b,c,d,4\n")
    assert "line 2: unknown label '4'" in _error(read_swag, str(swag))

    _race_article(tmp_path / "race" / "a.txt", answers=("B", "E"))
    assert _error(read_race, str(tmp_path / "race")).startswith(
        f"{tmp_path / 'race' / 'a.txt'}:answers[1]: unknown answer 'E'")
    _race_article(tmp_path / "race3" / "b.txt", options=[["x", "y", "z"], ["1", "2", "3", "4"]])
    assert "options[0]: expected 4 options" in _error(read_race, str(tmp_path / "race3"))
    (tmp_path / "race_empty").mkdir()
    assert "no RACE article files" in _error(read_race, str(tmp_path / "race_empty"))


def test_conll_errors(tmp_path):
    path = _write(tmp_path / "eng.bad", "-DOCSTART- -X- O O\n\nEU NNP I-NP I-ORG\nrejects VBZ I-VP\n")
    assert _error(read_conll, str(path)) == f"{path}:line 4: expected 4 space-separated fields, found 3"
    path.write_text("EU NNP I-NP I-ORG\nrejects VBZ I-VP B-FOO\n")
    assert _error(read_conll, str(path)).startswith(f"{path}:line 2: unknown tag 'B-FOO'")
    path.write_text("-DOCSTART- -X- O O\n\n")
    assert _error(read_conll, str(path)) == f"{path}: no sentences in the file"


def test_a_json_file_read_as_tsv_is_named_without_echoing_it(tmp_path):
    """A SQuAD JSON given to a GLUE task: one line of error, not the whole file echoed."""
    from finetune.tasks import get_task
    big = tmp_path / "train.tsv"
    big.write_text('{"data": [' + ", ".join(['{"title": "x"}'] * 2000) + "]}\n")  # 32 KB
    with pytest.raises(ValueError) as caught:
        get_task("sst2").read(str(big), "train")
    message = str(caught.value)
    assert "\n" not in message and len(message) < 600, message[:1000]
    assert str(big) in message and "characters" in message
