"""The pretraining-transfer experiment: the wikipedia20m corpus choice, the transfer line and
its verdicts, and the whole experiment end to end at a toy budget on a slice of the corpus."""
import json
import math
import re
import shutil

import pytest

from tools.ablations import render
from tools.ablations import report as reports
from tools.ablations.experiments import (EXPERIMENTS, best_learning_rate_row, bert_pretrained,
                                         learning_rate_note, miniature_reference_note,
                                         random_init, transfer_bar, transfer_verdicts,
                                         VERDICTS)
from tools.ablations.workspace import CORPORA, Budget, Workspace

DELTA = r"[+-]\d+\.\d"
LINE = re.compile(f"transfer: bert sst2 {DELTA} stsb {DELTA} squad_f1 {DELTA}; "
                  f"bert_fullsent sst2 {DELTA} stsb {DELTA}; "
                  f"gpt sst2 {DELTA} story_cloze {DELTA}")


def test_corpus_is_validated():
    assert Budget(corpus="wikipedia20m").corpus == "wikipedia20m"
    with pytest.raises(ValueError, match="corpus 'wiki': expected one of"):
        Budget(corpus="wiki")


def verdict_rows(verdicts):
    """(model, task, delta, spread, clears the spread, verdict) of transfer_verdict notes."""
    return [(v["model"], v["task"], round(v["delta"], 2), round(v["spread"], 2),
             v["clears_spread"], v["verdict"]) for v in verdicts]


def test_verdicts_compare_the_gap_with_the_larger_std():
    # BERT sst2: +4.0 over stds 1.0 / 0.0 (transfers); stsb: +0.5 inside a 1.0 std (does not);
    # squad: -2.0 (does not). Its full_sentences arm against the same random init: sst2 +5.0,
    # stsb +3.5, squad +2.0 (in the table, not the line). GPT sst2 +1.0 over 0.5; story cloze
    # equal means (does not).
    rows = {
        "bert pretrained": {"SST-2 acc": [79.0, 81.0], "STS-B Spearman": [31.0, 33.0],
                            "SQuAD F1": [5.0, 5.0]},
        "bert_fullsent pretrained": {"SST-2 acc": [81.0, 81.0], "STS-B Spearman": [35.0, 35.0],
                                     "SQuAD F1": [9.0, 9.0]},
        "bert random": {"SST-2 acc": [76.0, 76.0], "STS-B Spearman": [31.5, 31.5],
                        "SQuAD F1": [7.0, 7.0]},
        "gpt pretrained": {"SST-2 acc": [60.0, 61.0], "Story Cloze acc": [55.0, 55.0]},
        "gpt random": {"SST-2 acc": [59.5, 59.5], "Story Cloze acc": [54.0, 56.0]},
    }
    verdicts = transfer_verdicts(rows, {})
    assert verdict_rows(verdicts) == [
        ("bert", "sst2", 4.0, 1.0, True, "transfers"),
        ("bert", "stsb", 0.5, 1.0, False, "does_not_clear_spread"),
        ("bert", "squad_f1", -2.0, 0.0, False, "does_not_clear_spread"),
        ("bert_fullsent", "sst2", 5.0, 0.0, True, "transfers"),
        ("bert_fullsent", "stsb", 3.5, 0.0, True, "transfers"),
        ("bert_fullsent", "squad_f1", 2.0, 0.0, True, "transfers"),
        ("gpt", "sst2", 1.0, 0.5, True, "transfers"),
        ("gpt", "story_cloze", 0.0, 1.0, False, "does_not_clear_spread")]
    bar, = transfer_bar(verdicts)
    assert (bar["kind"], bar["met"]) == ("transfer_bar", False)
    # The summary line scripts read.
    assert render.transfer_line(verdicts) == (
        "transfer: bert sst2 +4.0 stsb +0.5 squad_f1 -2.0; bert_fullsent sst2 +5.0 stsb +3.5; "
        "gpt sst2 +1.0 story_cloze +0.0")
    # A run without the full_sentences arm (rows of an older report) has no verdicts for it.
    del rows["bert_fullsent pretrained"]
    assert [v["model"] for v in transfer_verdicts(rows, {})] == ["bert"] * 3 + ["gpt"] * 2


def test_verdicts_name_the_arms_that_do_not_beat_the_constant_answer():
    """A delta between arms at or below the constant answer (the commonest label; for STS-B
    the mean score, whose correlation is 0) is no evidence of transfer: the verdict names
    those arms (compared at the table's one decimal), and a pretrained arm there makes the task
    'not_shown' and the bar unmet, however far the deltas clear their spreads."""
    # As chance_scores gives it: SQuAD has no column here (no label to answer).
    chance = {"SST-2 acc": 56.00000000000001, "STS-B Spearman": 0.0, "STS-B Pearson": 0.0,
              "Story Cloze acc": 53.0}
    rows = {"bert pretrained": {"SST-2 acc": [65.0, 66.4], "STS-B Spearman": [40.0, 42.0],
                                "SQuAD F1": [14.0, 14.0]},
            "bert random": {"SST-2 acc": [56.0, 56.0], "STS-B Spearman": [-3.0, -3.0],
                            "SQuAD F1": [12.0, 12.0]},
            "gpt pretrained": {"SST-2 acc": [59.0, 59.0], "Story Cloze acc": [50.0, 52.0]},
            "gpt random": {"SST-2 acc": [57.0, 57.0], "Story Cloze acc": [48.0, 48.0]}}
    verdicts = transfer_verdicts(rows, chance)
    assert [(v["task"], v["arms_at_chance"], v["chance"], v["verdict"]) for v in verdicts] == [
        ("sst2", ["random"], chance["SST-2 acc"], "transfers"),
        ("stsb", ["random"], 0.0, "transfers"),
        ("squad_f1", [], None, "transfers"),                     # no label to answer
        ("sst2", [], chance["SST-2 acc"], "transfers"),
        ("story_cloze", ["pretrained", "random"], 53.0, "not_shown")]
    bar, not_shown = transfer_bar(verdicts)
    assert not bar["met"] and not_shown == {"kind": "transfer_not_shown",
                                            "tasks": [["gpt", "story_cloze"]]}
    rows["gpt pretrained"]["Story Cloze acc"] = [56.0, 56.0]
    assert transfer_bar(transfer_verdicts(rows, chance))[0]["met"]


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
    assert learning_rate_note({"BERT random": chosen}) == {"kind": "learning_rates", "picks": [
        {"arm": "BERT random", "task": "sst2", "learning_rate": 1e-3,
         "means": [{"learning_rate": 1e-3, "mean": 61.0}, {"learning_rate": 3e-4, "mean": 61.0}]},
        {"arm": "BERT random", "task": "squad_f1", "learning_rate": 3e-4,
         "means": [{"learning_rate": 1e-3, "mean": 14.0},
                   {"learning_rate": 3e-4, "mean": 15.5}]}]}
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
    for task in ("stsb", "story_cloze"):
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
    assert labels == ["BERT pretrained", "BERT random init",
                      "BERT MLM-only full_sentences pretrained", "GPT-1 pretrained",
                      "GPT-1 random init"]
    bert_row, fullsent_row, gpt_row = (report.rows[i][1] for i in (0, 2, 3))
    assert set(bert_row) == set(fullsent_row) == {
        "BERT SST-2 acc", "BERT STS-B Spearman", "BERT STS-B Pearson", "BERT SQuAD F1",
        "BERT SQuAD EM"}
    assert set(gpt_row) == {"GPT SST-2 acc", "GPT Story Cloze acc"}
    assert all(len(values) == 2 for values in bert_row.values())
    data = report.data()

    def notes(kind):
        return [note for note in data["notes"] if note["kind"] == kind]
    assert [(v["model"], v["task"], v["in_line"]) for v in notes("transfer_verdict")] == [
        ("bert", "sst2", True), ("bert", "stsb", True), ("bert", "squad_f1", True),
        ("bert_fullsent", "sst2", True), ("bert_fullsent", "stsb", True),
        ("bert_fullsent", "squad_f1", False), ("gpt", "sst2", True),
        ("gpt", "story_cloze", True)]
    assert all(v["verdict"] in VERDICTS for v in notes("transfer_verdict"))
    assert [bar["kind"] for bar in notes("transfer_bar")] == ["transfer_bar"]
    bert_note, fullsent_note, gpt_note = notes("pretraining")
    assert 0 <= bert_note["mask_accuracy"] <= 1 and 0 <= bert_note["kept_accuracy"] <= 1
    assert bert_note["steps"] == gpt_note["steps"] == 8 and gpt_note["perplexity"] > 1
    assert fullsent_note["label"] == "BERT MLM-only full_sentences" and math.isnan(
        fullsent_note["nsp_accuracy"])
    # Both BERT arms scored on both packings' held-out shards: four real evaluations.
    held_out, = notes("held_out_mlm")
    assert [(s["model"], s["records"]) for s in held_out["scores"]] == [
        ("bert", "nsp_pairs"), ("bert", "full_sentences"), ("bert_fullsent", "nsp_pairs"),
        ("bert_fullsent", "full_sentences")]
    assert all(0 <= s["mask_accuracy"] <= 1 and s["positions"] > 0 for s in held_out["scores"])
    # Each arm on its own packing's shard is what its pretraining note reads (same batches).
    assert (bert_note["mask_accuracy"], fullsent_note["mask_accuracy"]) == pytest.approx(
        (held_out["scores"][0]["mask_accuracy"], held_out["scores"][3]["mask_accuracy"]))
    # 8 steps keep a checkpoint every step: two curve points are the first checkpoint
    # (fine-tuned for the curve) and the last (the pretrained row's own jobs).
    # The curve fine-tunes at --bert_finetune_learning_rate (1e-3), whichever lr the rows kept:
    # its ends are the rows' jobs at that lr, and naming that lr (as the rows do, through
    # best_learning_rate_row) hashes to the same jobs: asking again runs nothing.
    jobs = len(list((tmp_path / "work" / "finetune").iterdir()))
    at_default = {arm: ws.finetune_seeds(name, "sst2", "bert", checkpoint,
                                         learning_rates=(1e-3,), **extra)["accuracy"]
                  for arm, name, checkpoint, extra in (
                      ("random", "objectives_random", "", random_init(ws, "bert")),
                      ("pretrained", "objectives_mlm_nsp", bert_pretrained(ws), {}))}
    assert len(list((tmp_path / "work" / "finetune").iterdir())) == jobs
    curve, = notes("checkpoint_curve")
    assert (curve["task"], curve["learning_rate"]) == ("sst2", 1e-3)
    assert [p["step"] for p in curve["points"]] == [0, 1, 8]
    assert (curve["points"][0]["values"], curve["points"][-1]["values"]) == (
        at_default["random"], at_default["pretrained"])
    assert len(list((tmp_path / "work" / "finetune").glob("transfer_bert_step1-sst2-s*"))) == 2
    # One lr (the default): one job per seed, and no lr-selection note (the selection among
    # several lrs is test_each_arm_keeps_the_learning_rate_with_the_best_held_back_mean's).
    for name in ("objectives_random", "objectives_mlm_nsp", "transfer_mlm_fullsent"):
        for task in ("sst2", "stsb", "squad_v1"):
            assert len(list((tmp_path / "work" / "finetune").glob(f"{name}-{task}-s*"))) == 2
    assert not notes("learning_rates")
    # The chance line of every column a constant answer can be scored on (not SQuAD's).
    assert list(data["chance"]) == ["BERT SST-2 acc", "BERT STS-B Spearman",
                                    "BERT STS-B Pearson", "GPT SST-2 acc", "GPT Story Cloze acc"]
    assert data["chance"]["BERT STS-B Spearman"] == 0.0
    path = reports.write_report(report, tmp_path / "report", "python -m x", 1.0)
    assert json.loads((tmp_path / "report" / "pretraining_transfer.json").read_text(
        encoding="utf-8"))["notes"] == json.loads(json.dumps(data["notes"]))
    lines = path.read_text(encoding="utf-8").rstrip("\n").splitlines()
    assert LINE.fullmatch(lines[-1])       # the transfer line scripts read, last
    assert any(line.startswith("| BERT random init | ") for line in lines)
    # A workspace carried without its weights (job_results/ holds done.json, metrics and
    # results only) gives the same report and runs nothing: the curve's checkpoints are named
    # from each pretraining's settings and written only for a job that runs.
    work = tmp_path / "work"
    weights = [path for pattern in ("pretrain/*/ckpt-*", "pretrain/*/checkpoint",
                                    "pretrain/*/pretrained.keras", "pretrain/*/steps")
               for path in work.glob(pattern)]
    assert any(path.name == "steps" for path in weights)
    for path in weights:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    carried = Workspace(str(work), str(wiki_slice), budget, lambda m: None)
    again = EXPERIMENTS["pretraining_transfer"](carried)
    assert carried.jobs_run == 0 and again.rows == report.rows
    assert json.dumps(again.data()["notes"]) == json.dumps(data["notes"])


def test_scale_reference_is_google_s_miniature_of_the_same_shape():
    (note,) = miniature_reference_note("bert_tiny")
    assert note == {"kind": "scale_reference", "config": "bert_tiny", "sst2": 83.2,
                    "mrpc_f1": 81.1, "stsb_spearman": 73.6, "mrpc_constant_f1": 79.9,
                    "near_constant_answer": True}
    (small,) = miniature_reference_note("bert_small")
    assert (small["mrpc_f1"], small["near_constant_answer"]) == (83.4, False)
    # A shape outside the table: no reference rather than a wrong one.
    assert miniature_reference_note("bert_test") == []
