"""The ablation runner: registry, report formatting, cached and deterministic jobs."""
import hashlib
import json
import math
import pathlib
import re

import pytest

from tools.ablations import render
from tools.ablations import report as reports
from tools.ablations.experiments import EXPERIMENTS, chance_scores
from tools.ablations.workspace import (TASK_SETUPS, ZERO_SHOT_METRICS, Budget, Workspace,
                                       display_value, settings_hash)


def held_out_accuracy(folder, prefix):
    """The SST-2 accuracy (percent) of the one fine-tuning job named `prefix`, checked against
    its results.json: a whole number of the held-out examples it was scored on."""
    result_file, = folder.glob(f"{prefix}-sst2-s0-*/results.json")
    result = json.loads(result_file.read_text())
    n, accuracy = result["num_eval_examples"], result["mean"]
    assert n >= 32 and 0.0 <= accuracy <= 1.0
    assert accuracy * n == pytest.approx(round(accuracy * n), abs=1e-6)
    return 100.0 * accuracy


def test_registry_has_every_experiment_the_issue_names():
    for name in ("bert_objectives", "bert_masking", "gpt_aux_lm", "gpt_no_pretraining",
                 "layer_transfer", "zero_shot_vs_steps", "model_size", "gpt_lstm",
                 "bert_feature_based", "loss_imbalanced"):
        assert name in EXPERIMENTS


def test_cells_carry_the_seeds_mean_and_population_std():
    assert reports.cell_data([80.0, 82.0, 84.0]) == {
        "values": [80.0, 82.0, 84.0], "mean": 82.0, "std": pytest.approx(math.sqrt(8 / 3))}
    assert reports.cell_data([71.25]) == {"values": [71.25], "mean": 71.25, "std": 0.0}


def test_markdown_renders_the_table_rows_from_the_data(tmp_path):
    """The one test of the renderer's words: the JSON beside the Markdown is the report's data,
    and the Markdown's table rows are its cells (mean ± std, the mean alone for one seed, –
    for none)."""
    rows = [("pre", {"A": [60.0, 62.0], "B": [71.25]}), ("none", {"A": [50.0, 50.0]})]
    report = reports.Report(name="r", title="T", intro="i", columns=["A", "B"], rows=rows,
                            seeds=2, bar_chart=False, chance={"A": 50.0},
                            claims=[reports.Claim("pretraining helps", "pre", "none", ["A"])])
    text = reports.write_report(report, tmp_path, "python -m x", 1.0,
                                budget={"seeds": [0, 1]}).read_text()
    data = json.loads((tmp_path / "r.json").read_text())
    assert data == json.loads(json.dumps(report.data(data["compute"], {"seeds": [0, 1]})))
    assert "| pre | 61.0 ± 1.0 | 71.2 |\n| none | 50.0 ± 0.0 | – |\n" in text
    assert render.render(data) == text


def test_claims_say_whether_the_direction_reproduces():
    assert reports.verdict([60.0, 62.0], [50.0, 50.0]) == (11.0, 1.0, "reproduces")
    assert reports.verdict([50.0, 54.0], [51.0, 51.0])[2] == "within_spread"
    assert reports.verdict([40.0, 40.0], [50.0, 52.0]) == (-11.0, 1.0, "reversed")
    rows = [("pre", {"A": [60.0, 62.0], "B": [50.0, 54.0]}),
            ("none", {"A": [50.0, 50.0], "B": [51.0, 51.0]})]
    report = reports.Report(name="r", title="T", intro="i", columns=["A", "B"], rows=rows,
                            seeds=2, claims=[reports.Claim("pretraining helps", "pre", "none"),
                                             reports.Claim("only B", "pre", "none", ["B"])])
    assert judged(report.data()["claims"]) == [
        ("pretraining helps", "A", 11.0, 1.0, "reproduces"),
        ("pretraining helps", "B", 1.0, 2.0, "within_spread"),
        ("only B", "B", 1.0, 2.0, "within_spread")]


def judged(claims):
    """(claim, column, difference, larger spread, outcome) of judged claims, to one decimal."""
    return [(c["claim"], c["column"], round(c["delta"], 1), round(c["spread"], 1), c["outcome"])
            for c in claims]


def test_no_difference_claims_reproduce_within_the_spread():
    rows = [("a", {"A": [60.0, 62.0], "B": [60.0, 62.0]}),
            ("b", {"A": [60.5, 61.5], "B": [70.0, 70.0]})]
    claims = reports.judge_claims([reports.Claim("robust", "a", "b", same=True)], ["A", "B"],
                                  rows)
    assert judged(claims) == [("robust", "A", 0.0, 1.0, "reproduces"),
                              ("robust", "B", -9.0, 1.0, "apart")]
    assert all(c["same"] for c in claims)


def test_masking_claims_name_rows_of_the_masking_table():
    from tools.ablations.experiments import MASK_MIXES, masking_claims
    labels = [f"{m:.0%} [MASK] / {s:.0%} same / {r:.0%} random" for m, s, r in MASK_MIXES]
    rows = [(label, {"RTE acc": [50.0], "CoNLL F1 (fine-tune)": [60.0],
                     "CoNLL F1 (feature-based)": [70.0 - i]}) for i, label in enumerate(labels)]
    rows.append(("No pretraining", {"RTE acc": [50.0], "CoNLL F1 (fine-tune)": [30.0],
                                    "CoNLL F1 (feature-based)": [20.0]}))
    claims = masking_claims(labels[0], labels[1:], only_mask="100% [MASK] / 0% same / 0% random",
                            only_random="0% [MASK] / 0% same / 100% random")
    results = judged(reports.judge_claims(claims, ["RTE acc", "CoNLL F1 (fine-tune)",
                                                   "CoNLL F1 (feature-based)"], rows))
    assert ("pretraining helps", "CoNLL F1 (feature-based)", 50.0, 0.0,
            "reproduces") in results
    assert sum(c.startswith("fine-tuning is robust") and outcome == "reproduces"
               for c, *_, outcome in results) == 10
    assert ("100% [MASK] hurts feature-based NER", "CoNLL F1 (feature-based)", 1.0, 0.0,
            "reproduces") in results


def test_claims_on_one_value_rows_use_the_given_spread():
    # Zero-shot rows hold one score each: a std of 0 would call any gap a reproduction.
    assert reports.verdict([55.0], [50.0]) == (5.0, 0.0, "reproduces")
    assert reports.verdict([55.0], [50.0], lambda v: 2.5 * v[0] / 50)[1:] == (2.75, "reproduces")
    assert reports.verdict([52.0], [50.0], lambda v: 2.5)[2] == "within_spread"
    rows = [("step 1000", {"A": [52.0], "B": [60.0]}), ("step 0", {"A": [50.0], "B": [50.0]})]
    spreads = {"A": 3.0, "B": 2.0}
    report = reports.Report(name="z", title="T", intro="i", columns=["A", "B"], rows=rows,
                            seeds=1, spread=lambda c, values: spreads[c],
                            spread_name="the standard error",
                            claims=[reports.Claim("rises", "step 1000", "step 0")])
    data = report.data()
    assert data["spread_name"] == "the standard error"
    assert judged(data["claims"]) == [("rises", "A", 2.0, 3.0, "within_spread"),
                                      ("rises", "B", 10.0, 2.0, "reproduces")]


def test_chance_line_counts_the_held_back_slice_runs_are_scored_on(tmp_path, shared_data):
    """Always answering the commonest label of the slice every run is scored on, by the task's
    own metric: accuracy, MRPC's F1 of the paraphrase class, Story Cloze's ending index."""
    import csv
    ws = Workspace(str(tmp_path), str(shared_data), Budget(), lambda m: None)

    def column(path, name, delimiter):
        with open(path, encoding="utf-8-sig", newline="") as f:   # MRPC starts with a BOM
            return [row[name] for row in csv.DictReader(
                f, delimiter=delimiter, quoting=csv.QUOTE_NONE if delimiter == "\t" else
                csv.QUOTE_MINIMAL)]

    def commonest_share(labels):
        return max(labels.count(v) for v in set(labels)) / len(labels)

    # Independently of the readers: the last 10% of the TSV's rows, at most 1,000 of them.
    for task, folder, name in (("rte", "RTE", "label"), ("sst2", "SST-2", "label"),
                               ("mrpc", "MRPC", "Quality")):
        labels = column(shared_data / "glue" / folder / "train.tsv", name, "\t")
        held_back = labels[len(labels) - round(0.1 * len(labels)):][:1000]
        assert ws.constant_answer_scores(task)["accuracy"] == pytest.approx(
            100.0 * commonest_share(held_back))
    assert ws.constant_answer_scores("rte") == {"accuracy": pytest.approx(100.0 * 126 / 249)}
    # MRPC's commonest answer is "paraphrase": recall 1, precision = its share p, F1 2p/(1+p).
    mrpc = ws.constant_answer_scores("mrpc")
    p = mrpc["accuracy"] / 100.0
    assert mrpc["f1"] == pytest.approx(100.0 * 2 * p / (1 + p))
    assert (round(mrpc["accuracy"], 1), round(mrpc["f1"], 1)) == (69.2, 81.8)
    # Story Cloze is scored on the second half of its validation CSV.
    endings = column(shared_data / "storycloze" / "cloze_test_val__spring2016.csv",
                     "AnswerRightEnding", ",")
    assert ws.constant_answer_scores("story_cloze") == {"accuracy": pytest.approx(
        100.0 * commonest_share(endings[len(endings) - round(0.5 * len(endings)):]))}
    # No single answer for spans: no chance line. STS-B's is the mean score, whose correlation
    # with the gold scores is undefined and reported as 0.
    assert ws.constant_answer_scores("squad_v1") == {}
    assert ws.constant_answer_scores("stsb") == {"spearman": 0.0, "pearson": 0.0}
    assert chance_scores(ws, ("mrpc", "squad_v1")) == {"MRPC F1": mrpc["f1"],
                                                       "MRPC acc": mrpc["accuracy"]}


def test_claims_between_rows_at_chance_are_marked():
    """A claim between two rows no better than always answering the commonest label is marked
    (GPT-1's MRPC F1 here: random init answers "paraphrase" throughout), and the data lists
    each row's columns at the chance line; a row above it keeps the claim unmarked."""
    rows = [("pretrained", {"MRPC F1": [77.0, 77.6], "SST-2 acc": [59.0, 60.0]}),
            ("random", {"MRPC F1": [81.8, 81.8], "SST-2 acc": [56.0, 56.0]})]
    chance = {"MRPC F1": 81.8, "SST-2 acc": 56.00000000000001}
    claim = reports.Claim("pretraining helps", "pretrained", "random")
    claims = reports.judge_claims([claim], ["MRPC F1", "SST-2 acc"], rows, chance=chance)
    assert judged(claims) == [("pretraining helps", "MRPC F1", -4.5, 0.3, "reversed"),
                              ("pretraining helps", "SST-2 acc", 3.5, 0.5, "reproduces")]
    assert [c["both_at_chance"] for c in claims] == [True, False]
    assert not reports.judge_claims([claim], ["MRPC F1"], rows)[0]["both_at_chance"]
    data = reports.Report(name="r", title="T", intro="i", columns=["MRPC F1", "SST-2 acc"],
                          rows=rows, seeds=2, chance=chance, claims=[claim]).data()
    assert data["chance"] == chance
    assert {row["label"]: row["at_chance"] for row in data["rows"]} == {
        "pretrained": ["MRPC F1"], "random": ["MRPC F1", "SST-2 acc"]}


class ScriptedWorkspace(Workspace):
    """Every job answered from a hash of its settings: runs the experiments' own code (rows,
    claims, verdicts, notes, figures) in a fraction of a second, with no model."""

    @staticmethod
    def value(*key):
        return int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:4], "big") / 2 ** 32

    def records(self, mode, mask_token_rate=0.8, random_token_rate=0.1, packing="nsp_pairs"):
        return ((f"{mode}_{mask_token_rate}_{random_token_rate}_{packing}",),
                (f"held_out_{packing}",))

    def bpe_vocab_size(self):
        return 6000

    def wordpiece_vocab_size(self):
        return 8000

    def pretrain(self, name, model, model_config, records, steps=0, **overrides):
        model_dir = self.root / "pretrain" / f"{name}-{model_config}"
        model_dir.mkdir(parents=True, exist_ok=True)
        rows = [dict(step=step, eval_perplexity=900.0 / step, eval_mlm_accuracy=step / 1e4,
                     eval_nsp_accuracy=0.6, eval_lm_loss=6.0, eval_mlm_loss=5.0,
                     tokens_per_second=5000.0) for step in (100, 200, 300)]
        (model_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (model_dir / "done.json").write_text(json.dumps(dict(
            settings=dict(model_config=model_config), seconds=60.0, final_eval=rows[-1])))
        return model_dir

    def mlm_by_input(self, model_dir, batches=30, held_out=()):
        return dict(positions=1000.0, mask_accuracy=0.1, random_accuracy=0.05, kept_accuracy=0.9,
                    unigram_accuracy=0.04, mask_share=0.8, random_share=0.1, kept_share=0.1)

    def finetune(self, name, task, model, init_checkpoint, seed, prepare=None, **overrides):
        key = (name, task, pathlib.Path(str(init_checkpoint)).name, seed, sorted(overrides))
        return {k: self.value(key, k) for k, _ in TASK_SETUPS[task]["metrics"]}

    def constant_answer_scores(self, task):
        return {"sst2": {"accuracy": 56.0}, "mrpc": {"f1": 81.8, "accuracy": 69.2}}.get(task, {})

    def zero_shot_curve(self, model_dir, tasks=("cola", "sst2", "story_cloze")):
        return [{"step": step, **{t: {ZERO_SHOT_METRICS[t]: self.value(model_dir.name, step, t)}
                                  for t in tasks}} for step in (0, 100, 200)]


def test_every_experiment_writes_data_its_markdown_is_rendered_from(tmp_path, monkeypatch):
    """Each experiment's report is JSON of enumerated outcomes and known note kinds, and the
    Markdown is that JSON rendered: rendering the file written gives the same text."""
    monkeypatch.setattr(Workspace, "checkpoint_steps",
                        staticmethod(lambda model_dir: [100, 200, 300]))
    ws = ScriptedWorkspace(str(tmp_path / "work"), str(tmp_path), Budget(
        corpus="wikipedia20m", bert_encoder="", transfer_learning_rates=(1e-3, 3e-4)),
        lambda m: None)
    for name, experiment in EXPERIMENTS.items():
        md = reports.write_report(experiment(ws), tmp_path / "reports", "python -m x", 1.0)
        data = json.loads((tmp_path / "reports" / f"{name}.json").read_text(encoding="utf-8"))
        # The figures link only the PNGs drawn: all with matplotlib ('.[reports]'), or none.
        drawn = {figure["file"] for figure in data["figures"]
                 if (tmp_path / "reports" / figure["file"]).exists()}
        assert render.render(data, drawn=drawn) == md.read_text(encoding="utf-8"), name
        assert {n["kind"] for n in data["notes"]} <= set(render.NOTES), name
        assert {c["outcome"] for c in data["claims"]} <= set(reports.OUTCOMES), name
    # pretraining_transfer's, the last: a value per seed in each cell, the verdicts in notes.
    assert all(len(cell["values"]) == len(ws.budget.seeds)
               for row in data["rows"] for cell in row["cells"].values())
    kinds = [n["kind"] for n in data["notes"]]
    # Both BERT arms on SST-2, STS-B and SQuAD, GPT-1 on two; the full_sentences arm's SQuAD
    # is in the table and its verdict, not in the transfer line the issue fixed.
    assert kinds.count("transfer_verdict") == 8 and "learning_rates" in kinds
    assert [(n["model"], n["task"]) for n in data["notes"] if n["kind"] == "transfer_verdict"
            and not n["in_line"]] == [("bert_fullsent", "squad_f1")]
    held_out = next(n for n in data["notes"] if n["kind"] == "held_out_mlm")
    assert {(s["model"], s["records"]) for s in held_out["scores"]} == {
        (arm, packing) for arm in ("bert", "bert_fullsent")
        for packing in ("nsp_pairs", "full_sentences")}
    assert held_out["scores"][0]["mlm_accuracy"] == pytest.approx(0.08 + 0.005 + 0.09)
    assert render.NOTES["held_out_mlm"](held_out).endswith(
        "; answering the commonest target everywhere scores 4.0 on nsp_pairs, 4.0 on "
        "full_sentences.")
    line = render.transfer_line(data["notes"])
    delta = r"[-+]\d+\.\d"
    assert re.fullmatch(f"transfer: bert sst2 {delta} stsb {delta} squad_f1 {delta}; "
                        f"bert_fullsent sst2 {delta} stsb {delta}; "
                        f"gpt sst2 {delta} story_cloze {delta}", line), line
    fullsent = next(r for r in data["rows"] if "full_sentences" in r["label"])
    assert set(fullsent["cells"]) == {"BERT SST-2 acc", "BERT STS-B Spearman",
                                      "BERT STS-B Pearson", "BERT SQuAD F1", "BERT SQuAD EM"}


def test_transfer_bar_needs_every_bert_and_gpt_task_to_transfer():
    """The issue's bar: BERT's and GPT-1's pretrained arms clear the larger std on every task
    and beat the constant answer; bert_fullsent is reported beside it, not barred."""
    from tools.ablations.experiments import transfer_bar

    def verdict(model, task, outcome):
        return {"kind": "transfer_verdict", "model": model, "task": task, "verdict": outcome}
    passing = [verdict("bert", t, "transfers") for t in ("sst2", "stsb", "squad_f1")] + [
        verdict("gpt", t, "transfers") for t in ("sst2", "story_cloze")]
    assert transfer_bar(passing + [verdict("bert_fullsent", "stsb", "does_not_clear_spread")]
                        )[0]["met"]
    for index, outcome in ((1, "does_not_clear_spread"), (4, "not_shown")):
        failing = [dict(v) for v in passing]
        failing[index]["verdict"] = outcome
        notes = transfer_bar(failing)
        assert not notes[0]["met"] and notes[0]["rule"]
    assert notes[1] == {"kind": "transfer_not_shown", "tasks": [["gpt", "story_cloze"]]}


def test_display_values_follow_the_papers():
    assert display_value("sst2", "accuracy", 0.875) == 87.5
    assert display_value("squad_v1", "f1", 61.0) == 61.0       # already a percentage


def test_settings_hash_is_stable_and_sensitive():
    a = settings_hash({"x": 1, "y": (1, 2)})
    assert a == settings_hash({"y": [1, 2], "x": 1})
    assert a != settings_hash({"x": 2, "y": (1, 2)})


def test_budget_validation():
    assert Budget(seeds=(0, 1)).seeds == (0, 1)
    with pytest.raises(TypeError, match="seeds must be a tuple of int"):
        Budget(seeds=("0", "1"))
    with pytest.raises(ValueError, match="seeds"):
        Budget(seeds=())
    with pytest.raises(ValueError, match="pretrain_steps"):
        Budget(pretrain_steps=2)


def test_every_budget_field_is_a_flag_of_run_ablations():
    """run_ablations defines a flag per Budget field: each needs help text (config_flags
    refuses a field without), and the flags give back a Budget."""
    from absl import flags
    from tfmodels.config_flags import dataclass_from_flags, define_flags_from_dataclass
    flag_values = flags.FlagValues()
    define_flags_from_dataclass(Budget, flag_values)
    flag_values(["run_ablations", "--corpus=wikipedia20m", "--seeds=0,1",
                 "--full_data_tasks=stsb,squad_v1"])
    budget = dataclass_from_flags(Budget, flag_values)
    assert (budget.corpus, budget.seeds, budget.full_data_tasks) == (
        "wikipedia20m", (0, 1), ("stsb", "squad_v1"))
    with pytest.raises(flags.IllegalFlagValueError, match="corpus"):
        flag_values(["run_ablations", "--corpus=wikipedia"])


def test_full_data_tasks_fine_tune_on_the_whole_file(tmp_path, monkeypatch):
    """--full_data_tasks lifts the finetune_examples cap for the named tasks only; the
    held-back evaluation slice stays the same."""
    import finetune.trainer
    seen = {}

    def fake_run(config, log):
        seen[config.task] = config
        return {"selected_run": {"metrics": {"accuracy": 0.5, "f1": 0.5}}}

    monkeypatch.setattr(finetune.trainer, "run_finetune", fake_run)
    with pytest.raises(ValueError, match="mprc"):
        Budget(full_data_tasks=("mprc",))
    ws = Workspace(str(tmp_path), str(tmp_path), Budget(full_data_tasks=("mrpc",)),
                   lambda m: None)
    monkeypatch.setattr(ws, "bert_vocab", lambda checkpoint: "vocab.txt")
    for task in ("sst2", "mrpc"):
        ws.finetune("x", task, "bert", "", 0)
    assert seen["sst2"].max_train_examples == 1000
    assert seen["mrpc"].max_train_examples == 0
    assert seen["mrpc"].holdout_before_cap and seen["mrpc"].max_eval_examples == 1000
    # Each report's intro names only its own tasks that used the whole file.
    from tools.ablations.experiments import examples_text
    budget = Budget(full_data_tasks=("mrpc", "squad_v1"))
    assert examples_text(budget, ("sst2", "mrpc", "squad_v1")) == (
        "the first 1000 examples of each task (MRPC and SQuAD v1.1: the whole training file "
        "less the held-back slice)")
    assert examples_text(budget, ("story_cloze", "rte")) == (
        "the first 1000 examples of each task (Story Cloze: half its validation CSV)")
    assert examples_text(budget, ("sst2",)) == "the first 1000 examples of each task"


def test_runners_sharing_a_work_dir_run_each_job_once(tmp_path, monkeypatch):
    """A second runner asking for a job another one is running waits for it and takes its
    result: no second run writing into the same folder. (The second runner is a thread here:
    flock locks belong to each open file, so two threads contend like two processes.)"""
    import threading
    import finetune.trainer
    running, release, runs, logs = threading.Event(), threading.Event(), [], []

    def fake_run(config, log):
        runs.append(config.output_dir)
        running.set()
        assert release.wait(30)
        results = {"selected_run": {"metrics": {"accuracy": 0.75}}}
        pathlib.Path(config.output_dir).mkdir(parents=True, exist_ok=True)
        (pathlib.Path(config.output_dir) / "results.json").write_text(json.dumps(results))
        return results

    monkeypatch.setattr(finetune.trainer, "run_finetune", fake_run)
    ws = Workspace(str(tmp_path), str(tmp_path), Budget(), logs.append)
    monkeypatch.setattr(ws, "bert_vocab", lambda checkpoint: "vocab.txt")
    got = {}
    first = threading.Thread(target=lambda: got.update(first=ws.finetune("x", "sst2", "bert",
                                                                           "", 0)))
    second = threading.Thread(target=lambda: got.update(second=ws.finetune("x", "sst2", "bert",
                                                                             "", 0)))
    first.start()
    assert running.wait(30)
    second.start()
    for _ in range(300):    # until the second one says it is waiting
        if any(m.startswith("waiting for x-sst2-s0-") for m in logs):
            break
        threading.Event().wait(0.1)
    assert any(m.startswith("waiting for x-sst2-s0-") for m in logs), logs
    release.set()
    first.join(30)
    second.join(30)
    assert len(runs) == 1
    assert got["first"] == got["second"] == {"accuracy": 0.75}


def test_each_pretrained_model_gets_its_own_learning_rate(tmp_path, monkeypatch):
    """The LSTM baseline is pretrained at --lstm_learning_rate, not the Transformer's lr (at
    GPT-1's 2.5e-4 it stays at unigram perplexity on wikipedia20m), into its own cache entry."""
    import pretraining.trainer
    seen = {}

    def fake_pretraining(config, log):
        seen[config.model] = config
        return []

    monkeypatch.setattr(pretraining.trainer, "run_pretraining", fake_pretraining)
    budget = Budget(gpt_learning_rate=2.5e-4, lstm_learning_rate=2e-3, bert_learning_rate=1e-3)
    ws = Workspace(str(tmp_path), str(tmp_path), budget, lambda m: None)
    monkeypatch.setattr(ws, "bpe_vocab_size", lambda: 6000)
    monkeypatch.setattr(ws, "wordpiece_vocab_size", lambda: 8000)
    records = (("train.tfrecord",), ("held_out.tfrecord",))
    dirs = {model: ws.pretrain(model, model, config, records)
            for model, config in (("gpt", "gpt_small"), ("lstm", "lstm_small"),
                                  ("bert", "bert_tiny"))}
    assert {m: c.learning_rate for m, c in seen.items()} == {
        "gpt": 2.5e-4, "lstm": 2e-3, "bert": 1e-3}
    changed = Workspace(str(tmp_path), str(tmp_path),
                        Budget(gpt_learning_rate=2.5e-4, lstm_learning_rate=1e-3), lambda m: None)
    monkeypatch.setattr(changed, "bpe_vocab_size", lambda: 6000)
    assert changed.pretrain("gpt", "gpt", "gpt_small", records) == dirs["gpt"]     # cached
    assert changed.pretrain("lstm", "lstm", "lstm_small", records) != dirs["lstm"]  # new job
    assert seen["lstm"].learning_rate == 1e-3


def test_pretraining_steps_set_the_schedule_and_keep_the_default_cached(tmp_path, monkeypatch):
    """model_size may pretrain at fewer steps than --bert_pretrain_steps: warm-up, evals and
    checkpoints follow the steps asked for, and the budget's own steps hash as before."""
    import pretraining.trainer
    seen = []
    monkeypatch.setattr(pretraining.trainer, "run_pretraining",
                        lambda config, log: seen.append(config) or [])
    ws = Workspace(str(tmp_path), str(tmp_path), Budget(bert_pretrain_steps=16000),
                   lambda m: None)
    monkeypatch.setattr(ws, "wordpiece_vocab_size", lambda: 8000)
    records = (("train.tfrecord",), ("held_out.tfrecord",))
    default = ws.pretrain("b", "bert", "bert_tiny", records)
    assert ws.pretrain("b", "bert", "bert_tiny", records, steps=16000) == default
    short = ws.pretrain("b", "bert", "bert_tiny", records, steps=4000)
    assert short != default and len(seen) == 2
    assert (seen[1].train_steps, seen[1].warmup_steps, seen[1].checkpoint_every) == (
        4000, 400, 500)
    with pytest.raises(ValueError, match="model_size_pretrain_steps"):
        Budget(model_size_pretrain_steps=4)


def test_resumed_pretraining_counts_every_process_time(tmp_path, monkeypatch):
    """A pretraining cut short and resumed by a second process reports the seconds of both in
    done.json (which the reports' compute lines sum), not only the finishing process's."""
    import pretraining.trainer
    from tools.ablations import workspace
    clock = {"now": 0.0}
    monkeypatch.setattr(workspace.time, "perf_counter", lambda: clock["now"])

    def interrupted(config, log):
        for _ in range(3):            # three logged windows of 100 s, then the machine goes
            clock["now"] += 100.0
            log("step")
        clock["now"] += 40.0          # work after the last log line is not counted
        raise KeyboardInterrupt

    def finishing(config, log):
        for _ in range(2):
            clock["now"] += 50.0
            log("step")
        clock["now"] += 20.0
        return [{"step": 16000, "eval_mlm_accuracy": 0.14}]

    ws = Workspace(str(tmp_path), str(tmp_path), Budget(), lambda m: None)
    monkeypatch.setattr(ws, "wordpiece_vocab_size", lambda: 8000)
    records = (("train.tfrecord",), ("held_out.tfrecord",))
    monkeypatch.setattr(pretraining.trainer, "run_pretraining", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ws.pretrain("b", "bert", "bert_tiny", records)
    clock["now"] = 5000.0             # the next process's clock starts elsewhere
    monkeypatch.setattr(pretraining.trainer, "run_pretraining", finishing)
    model_dir = ws.pretrain("b", "bert", "bert_tiny", records)
    done = Workspace.pretrain_summary(model_dir)
    assert (done["seconds"], done["processes"]) == (300.0 + 120.0, 2)
    assert done["final_eval"] == {"step": 16000, "eval_mlm_accuracy": 0.14}
    assert ws.job_seconds[str(model_dir)] == 420.0
    # A fresh run of another job starts from zero.
    monkeypatch.setattr(pretraining.trainer, "run_pretraining", finishing)
    other = Workspace.pretrain_summary(ws.pretrain("b", "bert", "bert_tiny", records, steps=500))
    assert (other["seconds"], other["processes"]) == (120.0, 1)


def test_unknown_experiment_is_named():
    from tools.run_ablations import run_experiments
    with pytest.raises(ValueError, match="bert_objectivs"):
        run_experiments(["bert_objectivs"], "/nonexistent", "/nonexistent", "/nonexistent",
                        Budget())


@pytest.mark.slow
def test_jobs_are_cached_and_deterministic(tmp_path, shared_data, op_determinism):
    """A tiny GPT: BPE + records + pretraining + fine-tuning through the real library calls.
    A rerun takes every result from the cache; the same seed in a fresh folder gives the
    same numbers (with op determinism, as tools.run_ablations runs them)."""
    budget = Budget(gpt_config="gpt_test", pretrain_steps=8, pretrain_batch_size=4,
                    pretrain_seq_length=32, bpe_merges=200, finetune_examples=48,
                    finetune_epochs=1, seeds=(0,), jit_compile=False)
    logs = []
    ws = Workspace(str(tmp_path / "work"), str(shared_data), budget, logs.append)
    records = ws.records("gpt")
    assert records[0] and records[1] and not set(records[0]) & set(records[1])
    model_dir = ws.pretrain("tiny", "gpt", "gpt_test", records)
    summary = Workspace.pretrain_summary(model_dir)
    # Held-out loss of the 8-step model: finite and below a uniform guess over the vocabulary.
    import keras
    vocab_size = keras.saving.load_model(str(model_dir / "pretrained.keras"),
                                         compile=False).config.vocab_size
    assert 0.0 < summary["final_eval"]["eval_lm_loss"] < math.log(vocab_size)
    first = ws.finetune_seeds("a", "sst2", "gpt", str(model_dir))
    assert ws.jobs_run == 2
    timings = dict(ws.job_seconds)
    assert len(timings) == 2 and all(seconds > 0 for seconds in timings.values())
    # Rerun: nothing runs again.
    again = Workspace(str(tmp_path / "work"), str(shared_data), budget, logs.append)
    assert again.pretrain("tiny", "gpt", "gpt_test", records) == model_dir
    assert again.finetune_seeds("a", "sst2", "gpt", str(model_dir)) == first
    assert again.jobs_run == 0
    assert again.job_seconds == timings      # a cached job keeps the time it took when it ran
    # Same settings in another folder: the same numbers.
    assert again.finetune_seeds("b", "sst2", "gpt", str(model_dir)) == first
    # Changing a setting is a new job, not a stale result.
    again.finetune_seeds("a", "sst2", "gpt", str(model_dir), lm_weight=0.0)
    assert again.jobs_run == 2
    rows = [("pretrained", {"SST-2 acc": first["accuracy"]})]
    path = reports.write_report(
        reports.Report(name="tiny", title="Tiny", intro="A test.", columns=["SST-2 acc"],
                       rows=rows, seeds=1), tmp_path / "report", "python -m x", 1.0,
        {**timings, "old": None})
    assert "| pretrained |" in path.read_text(encoding="utf-8")
    compute = json.loads((tmp_path / "report" / "tiny.json").read_text())["compute"]
    assert compute == {"command": "python -m x", "seconds": 1.0, "cpu": compute["cpu"],
                       "jobs": 3, "untimed_jobs": 1,
                       "job_seconds": pytest.approx(sum(timings.values()))}
    assert "cores; flags:" in compute["cpu"]            # the CPU the timings come from
    (tmp_path / "report" / "longer").mkdir()
    (tmp_path / "report" / "longer" / "tiny.md").write_text("# Tiny, longer\n")
    index = reports.write_index(tmp_path / "report").read_text(encoding="utf-8")
    assert "- [Tiny](tiny.md)" in index
    assert "`longer/`:\n\n- [Tiny, longer](longer/tiny.md)" in index
    results = list((tmp_path / "work" / "finetune").glob("a-sst2-s0-*/results.json"))
    assert len(results) == 2 and json.loads(results[0].read_text())["task"] == "sst2"


def test_fixed_encoder_is_the_budgets_pretrained_bert(tmp_path, minilm_dir):
    """Fine-tuning-choice experiments use a real pretrained encoder when the budget names one
    (and say which in the report, its depth read from the loaded checkpoint); '' means
    pretraining bert_config in the workspace."""
    from tools.ablations.experiments import fixed_encoder
    folder = minilm_dir
    ws = Workspace(str(tmp_path / "work"), str(tmp_path), Budget(bert_encoder=str(folder)))
    checkpoint, described, depth = fixed_encoder(ws)
    assert (checkpoint, depth) == (str(folder), 6) and "6 x 384" in described
    assert Workspace(str(tmp_path / "w2"), str(tmp_path), Budget(bert_encoder="")).bert_encoder() is None


@pytest.mark.slow
def test_learned_wordpiece_vocabulary_runs_pretraining_and_fine_tuning(tmp_path, shared_data):
    """Budget.bert_vocab_size: a WordPiece vocabulary learned from the pretraining text sizes
    the pretrained BERT's embedding, and its fine-tuning jobs (and random init) read it; the
    external encoder keeps its own vocabulary."""
    import keras
    from tools.ablations.workspace import BERT_VOCAB, WIKITEXT
    # A small shared folder: the first articles of WikiText-2 (the records take seconds) and
    # the real SST-2 and BERT vocabulary.
    shared = tmp_path / "shared"
    (shared / WIKITEXT).parent.mkdir(parents=True)
    lines = (shared_data / WIKITEXT).read_text(encoding="utf-8").splitlines(keepends=True)
    (shared / WIKITEXT).write_text("".join(lines[:900]), encoding="utf-8")
    for folder in ("glue", "bert_vocab"):
        (shared / folder).symlink_to(shared_data / folder)
    budget = Budget(bert_config="bert_test", bert_vocab_size=400, pretrain_steps=8,
                    pretrain_batch_size=4, pretrain_seq_length=32, finetune_examples=32,
                    finetune_epochs=1, seeds=(0,), jit_compile=False, bert_encoder="")
    ws = Workspace(str(tmp_path / "work"), str(shared), budget, lambda m: None)
    vocab = ws.wordpiece_file()
    tokens = open(vocab, encoding="utf-8").read().split("\n")[:-1]
    assert tokens[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    # tf-text's learner lands near the target, not under it (see learn_wordpiece_vocab).
    assert 200 < len(tokens) < 1000 and ws.wordpiece_vocab_size() == len(tokens)
    assert "records/bert_32_mask0.8_random0.1_wordpiece400_passmajor/" in ws.records("bert")[0][0]
    model_dir = ws.pretrain("wp", "bert", "bert_test", ws.records("bert"))
    model = keras.models.load_model(str(model_dir / "pretrained.keras"), compile=False)
    assert max(w.shape[0] for w in model.weights if "embedding" in w.path) == len(tokens)
    assert ws.bert_vocab(model_dir) == vocab and ws.bert_vocab("") == vocab
    pretrained = ws.finetune_seeds("wp", "sst2", "bert", str(model_dir))["accuracy"][0]
    assert pretrained == pytest.approx(held_out_accuracy(tmp_path / "work" / "finetune", "wp"))
    random_init = ws.finetune_seeds("wp_random", "sst2", "bert", "", model_config="bert_test")
    assert random_init["accuracy"][0] == pytest.approx(
        held_out_accuracy(tmp_path / "work" / "finetune", "wp_random"))
    assert ws.bert_vocab("/elsewhere/model") == str(shared / BERT_VOCAB)


def test_packing_and_record_order_reach_the_records_and_the_pretraining(tmp_path, monkeypatch):
    """pretraining_transfer's MLM-only arm: bert_pretrained(packing=...) makes its own records
    with that packing, in the budget's record order, and pretrains them without NSP."""
    import pretraining.create_data
    import pretraining.trainer
    from tools.ablations.experiments import bert_pretrained
    made, trained = {}, {}

    def fake_creation(inputs, output_dir, config, num_workers, log):
        made[output_dir] = config
        for shard in ("a", "b"):
            pathlib.Path(output_dir, f"{shard}.tfrecord").parent.mkdir(parents=True,
                                                                       exist_ok=True)
            pathlib.Path(output_dir, f"{shard}.tfrecord").write_bytes(b"")

    def fake_pretraining(config, log):
        trained[config.input_files] = config
        return []

    monkeypatch.setattr(pretraining.create_data, "create_pretraining_data", fake_creation)
    monkeypatch.setattr(pretraining.trainer, "run_pretraining", fake_pretraining)
    for order in ("pass_major", "chunk_mixed"):
        ws = Workspace(str(tmp_path / order), str(tmp_path), Budget(record_order=order),
                       lambda m: None)
        monkeypatch.setattr(ws, "wordpiece_file", lambda: "vocab.txt")
        monkeypatch.setattr(ws, "wordpiece_vocab_size", lambda: 8000)
        monkeypatch.setattr(ws, "_documents", lambda: [tmp_path / "text.txt"])
        bert_pretrained(ws, use_nsp=False, packing="full_sentences")
        bert_pretrained(ws)
        with pytest.raises(ValueError, match="without NSP labels"):
            bert_pretrained(ws, use_nsp=True, packing="doc_sentences")
    by_name = {pathlib.Path(folder).name: (config.packing, config.record_order)
               for folder, config in made.items()}
    assert by_name == {
        "bert_128_mask0.8_random0.1_full_sentences_wordpiece8000_passmajor":
            ("full_sentences", "pass_major"),
        "bert_128_mask0.8_random0.1_wordpiece8000_passmajor": ("nsp_pairs", "pass_major"),
        # chunk_mixed keeps the folder names of the records made before issue 43.
        "bert_128_mask0.8_random0.1_full_sentences_wordpiece8000":
            ("full_sentences", "chunk_mixed"),
        "bert_128_mask0.8_random0.1_wordpiece8000": ("nsp_pairs", "chunk_mixed")}
    nsp = {pathlib.Path(files[0]).parent.name: config.use_nsp
           for files, config in trained.items()}
    assert nsp["bert_128_mask0.8_random0.1_full_sentences_wordpiece8000_passmajor"] is False
    assert nsp["bert_128_mask0.8_random0.1_wordpiece8000_passmajor"] is True
