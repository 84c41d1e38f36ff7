"""The pretraining-transfer experiment: the wikipedia20m corpus choice, the transfer line and
its verdicts, and the whole experiment end to end at a toy budget on a slice of the corpus."""
import re

import pytest

from tools.ablations import report as reports
from tools.ablations.experiments import (EXPERIMENTS, best_learning_rate_row,
                                         arms_at_chance, bert_pretrained, chance_verdict,
                                         learning_rate_note, miniature_reference_note,
                                         random_init, transfer_line,
                                         transfer_verdicts)
from tools.ablations.workspace import CORPORA, Budget, Workspace

LINE = re.compile(r"transfer: bert sst2 [+-]\d+\.\d mrpc [+-]\d+\.\d squad_f1 [+-]\d+\.\d; "
                  r"gpt sst2 [+-]\d+\.\d story_cloze [+-]\d+\.\d")


def test_corpus_is_validated():
    assert Budget(corpus="wikipedia20m").corpus == "wikipedia20m"
    with pytest.raises(ValueError, match="corpus 'wiki': expected one of"):
        Budget(corpus="wiki")


def test_verdicts_compare_the_gap_with_the_larger_std():
    # BERT sst2: +4.0 over stds 1.0 / 0.0 (transfers); mrpc: +0.5 inside a 1.0 std (does not);
    # squad: -2.0 (does not). GPT sst2 +1.0 over 0.5; story cloze equal means (does not).
    rows = {
        "bert pretrained": {"SST-2 acc": [79.0, 81.0], "MRPC F1": [81.0, 83.0],
                            "SQuAD F1": [5.0, 5.0]},
        "bert random": {"SST-2 acc": [76.0, 76.0], "MRPC F1": [81.5, 81.5],
                        "SQuAD F1": [7.0, 7.0]},
        "gpt pretrained": {"SST-2 acc": [60.0, 61.0], "Story Cloze acc": [55.0, 55.0]},
        "gpt random": {"SST-2 acc": [59.5, 59.5], "Story Cloze acc": [54.0, 56.0]},
    }
    verdicts = transfer_verdicts(rows)
    assert [(m, t, round(d, 2), round(s, 2), ok) for m, t, d, s, ok in verdicts] == [
        ("bert", "sst2", 4.0, 1.0, True), ("bert", "mrpc", 0.5, 1.0, False),
        ("bert", "squad_f1", -2.0, 0.0, False), ("gpt", "sst2", 1.0, 0.5, True),
        ("gpt", "story_cloze", 0.0, 1.0, False)]
    assert transfer_line(verdicts) == ("transfer: bert sst2 +4.0 mrpc +0.5 squad_f1 -2.0; "
                                       "gpt sst2 +1.0 story_cloze +0.0")


def test_verdicts_name_the_arms_that_do_not_beat_the_constant_answer():
    """A delta between arms at or below always answering the commonest label is no evidence
    of transfer: the verdict says which arm (compared at the table's one decimal)."""
    # As chance_scores gives it: SQuAD has no column here (no label to answer).
    chance = {"SST-2 acc": 56.00000000000001, "MRPC F1": 81.8, "MRPC acc": 69.2,
              "Story Cloze acc": 51.0}
    rows = {"bert pretrained": {"SST-2 acc": [65.0, 66.4], "MRPC F1": [77.8, 77.8]},
            "bert random": {"SST-2 acc": [56.0, 56.0], "MRPC F1": [75.1, 75.1]},
            "gpt pretrained": {"SST-2 acc": [59.0, 59.0], "Story Cloze acc": [50.0, 52.0]},
            "gpt random": {"SST-2 acc": [57.0, 57.0], "Story Cloze acc": [52.0, 52.0]}}
    tail = " the commonest-label answer"

    def verdict(model, short):
        return chance_verdict(*arms_at_chance(chance, model, short, rows))
    assert arms_at_chance(chance, "bert", "mrpc", rows) == (["pretrained", "random"], 81.8)
    assert verdict("bert", "sst2") == f"; random init does not beat{tail} (56.0)"
    assert verdict("bert", "mrpc") == f"; neither arm beats{tail} (81.8)"
    assert verdict("gpt", "story_cloze") == f"; the pretrained arm does not beat{tail} (51.0)"
    assert verdict("gpt", "sst2") == ""
    assert arms_at_chance(chance, "bert", "squad_f1", rows)[0] == []     # no label to answer
    assert verdict("bert", "squad_f1") == ""


def test_each_arm_keeps_the_learning_rate_with_the_best_held_back_mean(tmp_path):
    """Per task, the row's values are those of the lr whose mean of the transfer metric is
    highest (SQuAD picks on F1, not EM); a tie keeps the lr listed first."""
    results = {  # (task, lr) -> metric key -> values over seeds
        ("sst2", 1e-3): {"accuracy": [60.0, 62.0]},
        ("sst2", 3e-4): {"accuracy": [61.0, 61.0]},          # tie at 61.0: 1e-3 kept
        ("squad_v1", 1e-3): {"f1": [10.0, 18.0], "exact_match": [9.0, 9.0]},
        ("squad_v1", 3e-4): {"f1": [15.0, 16.0], "exact_match": [5.0, 5.0]}}
    asked = []

    class FakeWorkspace:
        def finetune_seeds(self, name, task, model, checkpoint, learning_rates, **overrides):
            asked.append((name, task, learning_rates, overrides))
            return results[(task, learning_rates[0])]

    row, chosen = best_learning_rate_row(FakeWorkspace(), "arm", ("sst2", "squad_v1"), "bert",
                                         "", (1e-3, 3e-4), model_config="bert_tiny")
    assert row == {"SST-2 acc": [60.0, 62.0], "SQuAD F1": [15.0, 16.0],
                   "SQuAD EM": [5.0, 5.0]}
    assert chosen == {"sst2": (1e-3, {1e-3: 61.0, 3e-4: 61.0}),
                      "squad_v1": (3e-4, {1e-3: 14.0, 3e-4: 15.5})}
    assert all(o == {"model_config": "bert_tiny"} for *_, o in asked) and len(asked) == 4
    assert learning_rate_note({"BERT random": chosen}) == (
        "BERT fine-tuning lr, picked per arm and task by the held-back mean as BERT picks on "
        "Dev: BERT random sst2 0.001 (0.001: 61.0, 0.0003: 61.0); BERT random squad_f1 0.0003 "
        "(0.001: 14.0, 0.0003: 15.5)")
    with pytest.raises(ValueError, match="transfer_learning_rates must be positive"):
        Budget(transfer_learning_rates=(1e-3, 0.0))


@pytest.fixture
def wiki_slice(tmp_path, shared_data):
    """A shared folder whose wikipedia20m is three small files cut (at article boundaries)
    from the real corpus, with the real task data beside it."""
    shared = tmp_path / "shared"
    corpus = shared / CORPORA["wikipedia20m"]
    corpus.mkdir(parents=True)
    for index in range(3):
        text = (shared_data / CORPORA["wikipedia20m"] / f"wiki_{index:03d}.txt").read_text(
            encoding="utf-8")
        articles = text.split("\n\n")[:25]
        (corpus / f"wiki_{index:03d}.txt").write_text("\n\n".join(articles) + "\n\n",
                                                      encoding="utf-8")
    for folder in ("glue", "squad", "storycloze"):
        (shared / folder).symlink_to(shared_data / folder)
    return shared


def test_wikipedia_corpus_vocabularies_and_held_out_shard(tmp_path, wiki_slice):
    """The corpus's files are the documents; vocabularies are learned from the first lines of
    every file but the last, and the records' held-out shard comes from the last file."""
    import json
    budget = Budget(corpus="wikipedia20m", vocab_lines=300, bert_vocab_size=400,
                    pretrain_seq_length=32, bpe_merges=100)
    ws = Workspace(str(tmp_path / "work"), str(wiki_slice), budget, lambda m: None)
    files = ws._documents()
    assert [p.name for p in files] == ["wiki_000.txt", "wiki_001.txt", "wiki_002.txt"]
    lines = ws._document_lines()
    first = [line for line in files[0].read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(lines) == 300 and lines[:len(first)] == first[:300]
    assert "/vocab/wikipedia20m_wordpiece_400/" in ws.wordpiece_file()
    train, held_out = ws.records("bert")
    assert "/records/wikipedia20m_bert_32_" in held_out[0]
    manifest = json.loads((tmp_path / "work" / "records" / held_out[0].split("/")[-2] /
                           "manifest.json").read_text())
    by_shard = {s["file"]: s["input"] for s in manifest["shards"]}
    assert by_shard[held_out[0].split("/")[-1]].endswith("wiki_002.txt")
    # 25 articles per file make one 1 MB chunk each: the first two files train.
    assert sorted(by_shard[t.split("/")[-1]].rsplit("/", 1)[1] for t in train) == [
        "wiki_000.txt", "wiki_001.txt"]


@pytest.mark.slow
def test_pretraining_transfer_end_to_end(tmp_path, wiki_slice, monkeypatch):
    """Both pretrainings, every fine-tuning arm, the checkpoint curve and the report, at a toy
    budget: the report holds the table, the notes and, last, the transfer line."""
    from tools.ablations.workspace import TASK_SETUPS
    # The toy configs have 64 positions.
    for task in ("mrpc", "story_cloze"):
        monkeypatch.setitem(TASK_SETUPS, task, dict(TASK_SETUPS[task], seq_length=64))
    monkeypatch.setitem(TASK_SETUPS, "squad_v1", dict(TASK_SETUPS["squad_v1"], seq_length=64,
                                                options=dict(doc_stride=24,
                                                             max_query_length=16)))
    budget = Budget(corpus="wikipedia20m", vocab_lines=300, bert_config="bert_test",
                    gpt_config="gpt_test", bert_vocab_size=400, bpe_merges=150,
                    pretrain_steps=8, bert_pretrain_steps=8, pretrain_batch_size=4,
                    pretrain_seq_length=32, finetune_examples=24, finetune_batch_size=8,
                    finetune_epochs=1, seeds=(0, 1), jit_compile=False,
                    transfer_curve_points=2)
    ws = Workspace(str(tmp_path / "work"), str(wiki_slice), budget, lambda m: None)
    report = EXPERIMENTS["pretraining_transfer"](ws)
    labels = [label for label, _ in report.rows]
    assert labels == ["BERT pretrained", "BERT random init", "GPT-1 pretrained",
                      "GPT-1 random init"]
    bert_row, gpt_row = report.rows[0][1], report.rows[2][1]
    assert set(bert_row) == {"BERT SST-2 acc", "BERT MRPC F1", "BERT MRPC acc",
                             "BERT SQuAD F1", "BERT SQuAD EM"}
    assert set(gpt_row) == {"GPT SST-2 acc", "GPT Story Cloze acc"}
    assert all(len(values) == 2 for values in bert_row.values())
    assert LINE.fullmatch(report.last_line)
    # 8 steps keep a checkpoint every step: two curve points are the first checkpoint
    # (fine-tuned for the curve) and the last (the pretrained row's own jobs).
    bert_note, = [note for note in report.notes if note.startswith("BERT pretraining: ")]
    assert "(at [MASK] 0." in bert_note and "at kept tokens " in bert_note
    # The curve fine-tunes at --bert_finetune_learning_rate (1e-3), whichever lr the rows kept:
    # its ends are the rows' jobs at that lr, and naming that lr (as the rows do, through
    # best_learning_rate_row) hashes to the same jobs: asking again runs nothing.
    jobs = len(list((tmp_path / "work" / "finetune").iterdir()))
    at_default = {arm: reports.cell(ws.finetune_seeds(name, "sst2", "bert", checkpoint,
                                                      learning_rates=(1e-3,),
                                                      **extra)["accuracy"])
                  for arm, name, checkpoint, extra in (
                      ("random", "objectives_random", "", random_init(ws, "bert")),
                      ("pretrained", "objectives_mlm_nsp", bert_pretrained(ws), {}))}
    assert len(list((tmp_path / "work" / "finetune").iterdir())) == jobs
    curve, = [note for note in report.notes if note.startswith("Curve (sst2, lr 0.001): ")]
    assert curve == (f"Curve (sst2, lr 0.001): step 0 {at_default['random']}, step 1 "
                     f"{curve.split('step 1 ')[1].split(',')[0]}, step 8 "
                     f"{at_default['pretrained']}")
    assert len(list((tmp_path / "work" / "finetune").glob("transfer_bert_step1-sst2-s*"))) == 2
    # One lr (the default): one job per seed, and no lr-selection note (the selection among
    # several lrs is test_each_arm_keeps_the_learning_rate_with_the_best_held_back_mean's).
    for name in ("objectives_random", "objectives_mlm_nsp"):
        for task in ("sst2", "mrpc", "squad_v1"):
            assert len(list((tmp_path / "work" / "finetune").glob(f"{name}-{task}-s*"))) == 2
    assert not [note for note in report.notes if note.startswith("BERT fine-tuning lr, ")]
    # The chance line of every column a constant answer can be scored on (not SQuAD's).
    assert list(report.chance) == ["BERT SST-2 acc", "BERT MRPC F1", "BERT MRPC acc",
                                   "GPT SST-2 acc", "GPT Story Cloze acc"]
    path = reports.write_report(report, tmp_path / "report", "python -m x", 1.0)
    lines = path.read_text(encoding="utf-8").rstrip("\n").splitlines()
    assert lines[-1] == report.last_line
    assert any(re.fullmatch(r"- Always answering the held-back slice's commonest label \(the "
                            r"commonest-label answer\) scores "
                            r"BERT SST-2 acc \d+\.\d, BERT MRPC F1 \d+\.\d, .*", line)
               for line in lines)
    assert any(line.startswith("| BERT random init | ") for line in lines)


def test_scale_reference_is_google_s_miniature_of_the_same_shape():
    (note,) = miniature_reference_note("bert_tiny")
    assert "SST-2 83.2" in note and "MRPC F1 81.1" in note and "scores 79.9" in note
    assert "barely clears" in note
    (small,) = miniature_reference_note("bert_small")
    assert "MRPC F1 83.4" in small and "barely" not in small
    # A shape outside the table: no reference rather than a wrong one.
    assert miniature_reference_note("bert_test") == []
