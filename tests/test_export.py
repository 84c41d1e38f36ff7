"""SavedModel export (finetune.export) end to end, with the real BERT uncased and GPT-1 BPE
vocabularies and tiny random models: BERT SST-2 / RTE / STS-B / SQuAD / CoNLL, a GPT-1
similarity classifier (MRPC, both orders) and the GPT-1 LM.

Every export is loaded in a FRESH Python process with `tf.saved_model.load`; its raw-text
`serving_default` must reproduce the Keras model on the eager encoders' inputs (1e-5), and
`serving_ids` the same on the encoded ids. Also: saved_model_cli lists the signatures,
tensorflow-serving-api PredictRequests and the warmup records run against them, versions are
never overwritten, the op audit finds the tensorflow-text ops (none in an ids-only export,
which loads without tensorflow-text), bad requests get a defined result or a clear error, and
the two binaries' library paths (export from .keras, predict to JSONL) work.
"""
import dataclasses
import hashlib
import json
import os
import pickle
import subprocess
import sys
from typing import Any, Dict, List, Optional

import keras
import numpy as np
import pytest
import tensorflow as tf

from finetune import export
from finetune.examples import SpanExample, TextExample, TokenExample
from finetune.features import decode_word_predictions, encode_examples, predict_answers
from finetune.models import build_task_model
from finetune.tasks import get_task
from tfmodels import configs
from tfmodels.bert import BertEncoder
from tfmodels.gpt import GptDecoder, GptLanguageModel
from tfmodels.tokenizers.gpt_bpe import GptBpeTokenizer
from tfmodels.tokenizers.wordpiece import WordPieceTokenizer

SEQ = 32
TOL = 1e-5
TEXTS = ["The movie was great, I loved every minute of it!", "boring.",
         "A long review " + "that goes on and on " * 200]   # truncated to SEQ
PAIRS = [("A man is eating food.", "Someone eats."),
         ("Short premise.", "A much longer hypothesis " + "with many words " * 30),
         ("x " * 60, "y")]
BAD_UTF8 = b"caf\xe9 \xff\xfe good"

# Runs in a fresh interpreter: loads each export, calls its signatures, replays the
# PredictRequests and warmup records. Ids-only exports load BEFORE tensorflow_text is imported.
SERVE_SCRIPT = r"""
import os, pickle, sys
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
job = pickle.load(open(sys.argv[1], "rb"))
out = {"results": {}, "requests": {}, "warmup": {}}

def call(fn, inputs):
    try:
        result = fn(**{k: tf.constant(v) for k, v in inputs.items()})
        return {"outputs": {k: v.numpy() for k, v in result.items()}}
    except Exception as e:  # recorded: bad requests must fail with a clear message
        return {"error": f"{type(e).__name__}: {e}"}

def serve(name, case):
    model = tf.saved_model.load(case["dir"])
    for c in case["calls"]:
        out["results"][c["id"]] = call(model.signatures[c["signature"]], c["inputs"])
    checked = []
    for raw in case["requests"]:
        request = predict_pb2.PredictRequest.FromString(raw)
        fn = model.signatures[request.model_spec.signature_name]
        specs = fn.structured_input_signature[1]
        checked.append({
            "signature": request.model_spec.signature_name,
            "names": sorted(request.inputs) == sorted(specs),
            "dtypes": all(request.inputs[k].dtype == s.dtype.as_datatype_enum
                          for k, s in specs.items() if k in request.inputs),
            **call(fn, {k: tf.make_ndarray(v) for k, v in request.inputs.items()})})
    out["requests"][name] = checked
    warmup = os.path.join(case["dir"], "assets.extra", "tf_serving_warmup_requests")
    replayed = []
    for record in tf.data.TFRecordDataset(warmup).as_numpy_iterator():
        request = prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
        fn = model.signatures[request.model_spec.signature_name]
        replayed.append((request.model_spec.signature_name,
                         call(fn, {k: tf.make_ndarray(v) for k, v in request.inputs.items()})))
    out["warmup"][name] = replayed

for name in job["core_only"]:
    serve(name, job["cases"][name])
out["tf_text_imported_for_core_only"] = "tensorflow_text" in sys.modules
import tensorflow_text  # noqa: F401  (the raw-text exports need its kernels)
for name, case in job["cases"].items():
    if name not in job["core_only"]:
        serve(name, case)
pickle.dump(out, open(sys.argv[2], "wb"))
"""


@dataclasses.dataclass
class Call:
    id: str
    signature: str
    inputs: Dict[str, Any]
    expected: Optional[Dict[str, Any]] = None   # outputs (floats compared to TOL)
    error: str = ""                             # or a substring of the expected error


@dataclasses.dataclass
class Case:
    dir: str
    model: Any
    calls: List[Call]


# ---- building the exports and what Keras predicts -------------------------------------------

@pytest.fixture(scope="module")
def tokenizers(shared_data):
    wp = WordPieceTokenizer(str(shared_data / "bert_vocab/bert-base-uncased-vocab.txt"))
    folder = shared_data / "gpt1_openai"
    bpe = GptBpeTokenizer(str(folder / "encoder_bpe_40000.json"), str(folder / "vocab_40000.bpe"))
    return wp, bpe


def _strings(values) -> np.ndarray:
    return np.array([v if isinstance(v, bytes) else v.encode() for v in values], dtype=object)


def _text_inputs(spec, data) -> Dict[str, np.ndarray]:
    if spec.is_pair:
        return {"text_a": _strings([a for a, _ in data]), "text_b": _strings([b for _, b in data])}
    return {"text": _strings(data)}


def _class_expected(spec, outputs) -> Dict[str, Any]:
    if spec.kind.name == "regression":
        return {"score": outputs["predictions"].numpy()}
    probs = tf.nn.softmax(outputs["logits"]).numpy()
    ids = probs.argmax(-1)
    return {"probabilities": probs, "class_ids": ids,
            "labels": np.array([spec.label_names[i].encode() for i in ids], dtype=object)}


def _sequence_case(base, name, input_format, task, tokenizer, data) -> Case:
    spec = get_task(task)
    model = build_task_model(spec, _backbone(input_format, tokenizer))
    examples = [TextExample(str(i), *(d if isinstance(d, tuple) else (d,)))
                for i, d in enumerate(data)]
    options = {"symmetric": True} if model.symmetric else {}
    encoded = encode_examples(examples, spec.kind, input_format, tokenizer, SEQ,
                              label_names=spec.label_names, **options).inputs()
    expected = _class_expected(spec, model(encoded, training=False))
    path = export.export_saved_model(model, spec, tokenizer, str(base), name, SEQ)
    zero = {k: np.zeros((0,) + v.shape[1:], v.dtype) for k, v in encoded.items()}
    empty = {"text_a": _strings([""]), "text_b": _strings([""])} if spec.is_pair \
        else {"text": _strings([""])}
    return Case(path, model, [
        Call(f"{name}/empty", "serving_default", empty,
             _class_expected(spec, model(_empty_inputs(input_format, tokenizer, spec.is_pair,
                                                       model.symmetric), training=False))),
        Call(f"{name}/text", "serving_default", _text_inputs(spec, data), expected),
        Call(f"{name}/ids", "serving_ids", encoded, expected),
        Call(f"{name}/ids_zero_batch", "serving_ids", zero,
             {k: v[:0] for k, v in expected.items()})])


def _empty_inputs(input_format, tokenizer, pair, symmetric) -> Dict[str, np.ndarray]:
    """What empty texts pack to: the layout's special tokens only."""
    if input_format == "bert":
        ids = [tokenizer.cls_id, tokenizer.sep_id] + [tokenizer.sep_id] * pair
    else:
        ids = [tokenizer.start_id] + [tokenizer.delimiter_id] * pair + [tokenizer.classify_id]
    inputs = {"input_ids": np.zeros((1, SEQ), np.int32), "input_mask": np.zeros((1, SEQ), np.int32)}
    inputs["input_ids"][0, :len(ids)], inputs["input_mask"][0, :len(ids)] = ids, 1
    if input_format == "bert":
        inputs["segment_ids"] = np.zeros((1, SEQ), np.int32)
        inputs["segment_ids"][0, 2:len(ids)] = 1
    else:
        inputs["classify_position"] = np.array([len(ids) - 1], np.int32)
    if symmetric:
        inputs = {k: np.stack([v, v], axis=1) for k, v in inputs.items()}
    return inputs


def _backbone(input_format, tokenizer):
    if input_format == "bert":
        return BertEncoder(configs.get_config("bert_test", vocab_size=tokenizer.vocab_size))
    return GptDecoder(configs.get_config("gpt_test", vocab_size=tokenizer.vocab_size))


def _bert_sst2_bad_requests(case: Case, tokenizer) -> None:
    """Bad requests against the SST-2 export, with what each must give."""
    spec, model = get_task("sst2"), case.model
    # Not UTF-8: the invalid bytes become U+FFFD (which BERT's normaliser drops).
    replaced = BAD_UTF8.decode("utf-8", errors="replace")
    bad = encode_examples([TextExample("0", replaced)], "classification", "bert", tokenizer, SEQ,
                          label_names=spec.label_names).inputs()
    expected = next(c for c in case.calls if c.id == "sst2/empty").expected
    case.calls += [
        Call("sst2/zero_batch", "serving_default", {"text": np.zeros((0,), object)},
             {k: v[:0] for k, v in expected.items()}),
        Call("sst2/not_utf8", "serving_default", {"text": _strings([BAD_UTF8])},
             _class_expected(spec, model(bad, training=False))),
        Call("sst2/wrong_name", "serving_default", {"sentence": _strings(["hi"])},
             error="missing a required argument: 'text'"),
    ]


def _lm_case(base, tokenizer) -> Case:
    lm = GptLanguageModel(_backbone("gpt", tokenizer))
    texts = ["The cat sat on the", "hello world , this is a test of the language model " * 4]
    ids = tokenizer.encode(texts)
    log_probs, windows = [], []
    for row in ids:
        window = row[-SEQ:]
        x, mask = _pad(window)
        logits = lm({"input_ids": x, "input_mask": mask}, training=False)["logits"]
        log_probs.append(tf.nn.log_softmax(logits[0, len(window) - 1]).numpy())
        windows.append(window)
    generated = [_greedy(lm, w, 3) for w in windows]
    encoded = dict(zip(("input_ids", "input_mask"), map(np.concatenate, zip(*map(_pad, windows)))))
    expected = {"next_token_log_probs": np.stack(log_probs),
                "num_tokens": np.array([len(w) for w in windows], np.int32)}
    path = export.export_saved_model(lm, None, tokenizer, str(base), "gpt_lm", SEQ)
    # Each decoding option run in-process here; the fresh process must give the same outputs.
    in_process = export.build_serving_module(lm, None, tokenizer, SEQ).serving_signatures[
        "generate"]
    decodings = [Call(f"lm/generate_{name}", "generate", _generate_inputs(texts, 4, **options))
                 for name, options in LM_DECODINGS]
    for call in decodings:
        call.expected = {k: v.numpy() for k, v in in_process(
            **{k: tf.constant(v) for k, v in call.inputs.items()}).items()}
    return Case(path, lm, [
        Call("lm/text", "serving_default", {"text": _strings(texts)}, expected),
        Call("lm/ids", "serving_ids", encoded, expected),
        Call("lm/generate", "generate", _generate_inputs(texts, 3),
             {"token_ids": np.array(generated, np.int32),
              "text": _strings([tokenizer.decode(g) for g in generated]),
              "num_tokens": np.array([3, 3], np.int32)}),
        Call("lm/sample", "generate", _generate_inputs(texts, 2, top_k=5, seed=7)),
        *decodings,
        Call("lm/empty", "serving_default", {"text": _strings(["hello", ""])},
             error="text has no tokens"),
        Call("lm/generate_zero_batch", "generate", _generate_inputs(np.zeros((0,), object), 3),
             {"token_ids": np.zeros((0, 3), np.int32), "text": np.zeros((0,), object)}),
        Call("lm/bad_top_p", "generate", _generate_inputs(texts, 3, top_p=0.0),
             error="top_p must be in (0, 1]"),
        Call("lm/too_many_beams", "generate", _generate_inputs(texts, 3, num_beams=17),
             error="num_beams must be in 1..16"),
        Call("lm/bad_temperature", "generate", _generate_inputs(texts, 3, temperature=-1.0),
             error="temperature must be > 0"),
    ])


# (name, decoding options) the LM export runs in a fresh process.
LM_DECODINGS = [("greedy", {}), ("top_k", {"top_k": 8, "seed": 3}), ("temperature", {"temperature": 0.5, "seed": 1}),
                ("top_p", {"top_p": 0.9, "seed": 2}), ("do_sample", {"do_sample": True, "seed": 4}),
                ("beams", {"num_beams": 3}), ("stop", {"stop": [b"the", b","]}),
                ("beams_stop", {"num_beams": 2, "stop": [b"e"]})]


def _generate_inputs(texts, max_new_tokens, top_k=0, seed=0, temperature=1.0, top_p=1.0,
                     num_beams=1, do_sample=False, stop=()) -> Dict[str, np.ndarray]:
    """Every input of the `generate` signature (Python callers of a loaded SavedModel name
    them all)."""
    return {"text": texts if isinstance(texts, np.ndarray) else _strings(texts),
            "max_new_tokens": np.int32(max_new_tokens), "top_k": np.int32(top_k),
            "seed": np.int32(seed), "temperature": np.float32(temperature),
            "top_p": np.float32(top_p), "num_beams": np.int32(num_beams),
            "do_sample": np.bool_(do_sample), "stop": np.array(list(stop), dtype=np.bytes_)}


def _pad(window):
    x, mask = np.zeros((1, SEQ), np.int32), np.zeros((1, SEQ), np.int32)
    x[0, :len(window)], mask[0, :len(window)] = window, 1
    return x, mask


def _greedy(lm, window, steps):
    """Greedy continuation, dropping the oldest token when the window is full."""
    window, out = list(window), []
    for _ in range(steps):
        x, mask = _pad(window)
        logits = lm({"input_ids": x, "input_mask": mask}, training=False)["logits"]
        token = int(np.argmax(logits[0, len(window) - 1]))
        out.append(token)
        window = (window + [token])[-SEQ:]
    return out


def _squad_case(base, tokenizer) -> Case:
    spec = get_task("squad_v1")
    model = build_task_model(spec, _backbone("bert", tokenizer))
    questions = [SpanExample("q1", "Who wrote the book?",
                             "The book was written by John Smith in 1990, U.S.A. edition."),
                 SpanExample("q2", "When?", "It happened long ago, in the year 1850 or so.")]
    encoded = encode_examples(questions, "span", "bert", tokenizer, SEQ, max_query_length=8)
    outputs = model(encoded.inputs(), training=False)
    answers = predict_answers(outputs["start_logits"].numpy(), outputs["end_logits"].numpy(),
                              encoded.metadata, max_answer_length=30)
    best = [answers[q.qid] for q in questions]
    path = export.export_saved_model(model, spec, tokenizer, str(base), "squad", SEQ,
                                     max_query_length=8)
    return Case(path, model, [Call(
        "squad/empty", "serving_default", {"question": _strings([""]), "context": _strings([""])},
        {"answer": _strings([""]), "start": np.array([-1], np.int32),
         "end": np.array([-1], np.int32), "score": np.array([-np.inf], np.float32)}), Call(
        "squad/zero_batch", "serving_default", {"question": np.zeros((0,), object),
                                                "context": np.zeros((0,), object)},
        {"answer": np.zeros((0,), object), "start": np.zeros((0,), np.int32)}), Call(
        "squad/text", "serving_default",
        {"question": _strings([q.question for q in questions]),
         "context": _strings([q.context for q in questions])},
        {"answer": _strings([b.text for b in best]),
         "start": np.array([b.char_span[0] for b in best], np.int32),
         "end": np.array([b.char_span[1] for b in best], np.int32),
         "score": np.array([b.score for b in best], np.float32)})])


def _ner_case(base, tokenizer) -> Case:
    spec = get_task("conll2003")
    model = build_task_model(spec, _backbone("bert", tokenizer))
    sentences = [TokenExample("a", tuple("EU rejects German call to boycott lamb .".split())),
                 TokenExample("b", tuple(("Peter Blackburn " * 20).split()))]  # past SEQ: "O"
    encoded = encode_examples(sentences, "token_classification", "bert", tokenizer, SEQ,
                              label_names=spec.label_names)
    logits = model(encoded.inputs(), training=False)["logits"].numpy()
    tags = [decode_word_predictions(logits[i], f) for i, f in enumerate(encoded.metadata)]
    width = max(map(len, tags))
    path = export.export_saved_model(model, spec, tokenizer, str(base), "conll2003", SEQ)
    return Case(path, model, [Call(
        "ner/empty", "serving_default", {"sentence": _strings(["", " \t "])},
        {"tags": np.zeros((2, 0), object), "num_words": np.zeros((2,), np.int32)}), Call(
        "ner/zero_batch", "serving_default", {"sentence": np.zeros((0,), object)},
        {"tags": np.zeros((0, 0), object), "num_words": np.zeros((0,), np.int32)}), Call(
        "ner/text", "serving_default",
        {"sentence": _strings([" ".join(s.words) for s in sentences])},
        {"tags": np.array([[t.encode() for t in row] + [b""] * (width - len(row)) for row in tags],
                          dtype=object),
         "num_words": np.array([len(s.words) for s in sentences], np.int32)})])


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tokenizers):
    wp, bpe = tokenizers
    base = tmp_path_factory.mktemp("serving")
    keras.utils.set_random_seed(0)
    cases = {
        "sst2": _sequence_case(base, "sst2", "bert", "sst2", wp, TEXTS),
        "rte": _sequence_case(base, "rte", "bert", "rte", wp, PAIRS),
        "stsb": _sequence_case(base, "stsb", "bert", "stsb", wp, PAIRS),
        "gpt_mrpc": _sequence_case(base, "gpt_mrpc", "gpt", "mrpc", bpe, PAIRS),
        "lm": _lm_case(base, bpe),
        "squad": _squad_case(base, wp),
        "ner": _ner_case(base, wp),
    }
    _bert_sst2_bad_requests(cases["sst2"], wp)
    sst2 = cases["sst2"]
    # Second export of the same model: version 2; version 1 must be untouched.
    before = _tree_digest(sst2.dir)
    second = export.export_saved_model(sst2.model, get_task("sst2"), wp, str(base), "sst2", SEQ)
    ids_only = export.export_saved_model(sst2.model, get_task("sst2"), wp, str(base), "sst2_ids",
                                         SEQ, ids_only=True)
    ids_call = next(c for c in sst2.calls if c.id == "sst2/ids")
    cases["sst2_ids"] = Case(ids_only, sst2.model, [
        Call("ids_only/ids", "serving_ids", ids_call.inputs, ids_call.expected),
        Call("ids_only/default", "serving_default", ids_call.inputs, ids_call.expected)])
    return {"base": base, "cases": cases, "second": second, "v1_digest": before,
            "tokenizers": tokenizers}


def _tree_digest(folder) -> str:
    digest = hashlib.sha256()
    for root, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            path = os.path.join(root, name)
            digest.update(os.path.relpath(path, folder).encode())
            with open(path, "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def served(exported, tmp_path_factory):
    """Runs SERVE_SCRIPT in a fresh interpreter (and saved_model_cli beside it)."""
    work = tmp_path_factory.mktemp("serve")
    job = {"core_only": ["sst2_ids"], "cases": {}}
    for name, case in exported["cases"].items():
        requests = [export.predict_request(name, signature, _request_inputs(fn))
                    for signature, fn in _signatures(case.dir).items()]
        job["cases"][name] = {
            "dir": case.dir, "calls": [{"id": c.id, "signature": c.signature,
                                        "inputs": c.inputs} for c in case.calls],
            "requests": [r.SerializeToString() for r in requests]}
    with open(work / "job.pkl", "wb") as f:
        pickle.dump(job, f)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    cli = subprocess.Popen(
        [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "show", "--dir",
         exported["cases"]["sst2"].dir, "--all"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env)
    script = work / "serve.py"
    script.write_text(SERVE_SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(work / "job.pkl"),
                           str(work / "out.pkl")], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    cli_out, cli_err = cli.communicate(timeout=120)
    assert cli.returncode == 0, cli_err[-3000:]
    with open(work / "out.pkl", "rb") as f:
        result = pickle.load(f)
    result["cli"] = cli_out
    return result


def _signatures(path) -> Dict[str, Any]:
    return export.read_export_info(path)["signatures"]


def _request_inputs(info) -> Dict[str, np.ndarray]:
    specs = {k: tf.TensorSpec(v["shape"], tf.as_dtype(v["dtype"]))
             for k, v in info["inputs"].items()}
    return export.example_request(specs, SEQ)


def _assert_outputs(got: Dict[str, np.ndarray], expected: Dict[str, Any], where: str) -> None:
    for key, want in expected.items():
        assert key in got, f"{where}: no output {key!r} (has {sorted(got)})"
        have, want = np.asarray(got[key]), np.asarray(want)
        assert have.shape == want.shape, f"{where}/{key}: shape {have.shape} != {want.shape}"
        if want.dtype.kind == "f":
            np.testing.assert_allclose(have, want, atol=TOL, rtol=0, err_msg=f"{where}/{key}")
        else:
            np.testing.assert_array_equal(have, want, err_msg=f"{where}/{key}")


# ---- the tests --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["sst2", "rte", "stsb", "gpt_mrpc", "lm", "squad", "ner",
                                  "sst2_ids"])
def test_fresh_process_matches_keras(exported, served, name):
    """serving_default on raw strings (and serving_ids on ids) == the Keras model on the
    eager encoders' inputs, bad requests included."""
    for call in exported["cases"][name].calls:
        result = served["results"][call.id]
        if call.error:
            assert "error" in result, f"{call.id}: expected an error, got {result}"
            assert call.error in result["error"], f"{call.id}: {result['error'][:500]}"
        else:
            assert "outputs" in result, f"{call.id}: {result.get('error', '')[:2000]}"
            if call.expected is not None:
                _assert_outputs(result["outputs"], call.expected, call.id)


def test_top_k_generation_draws_from_the_top_k(exported, served):
    outputs = served["results"]["lm/sample"]["outputs"]
    assert outputs["token_ids"].shape == (2, 2)
    lm_text = next(c for c in exported["cases"]["lm"].calls if c.id == "lm/text")
    top5 = np.argsort(-lm_text.expected["next_token_log_probs"], axis=-1)[:, :5]
    assert all(outputs["token_ids"][r, 0] in top5[r] for r in range(2))


def test_generate_options_in_a_fresh_process(exported, served):
    """Each decoding option (compared above with the in-process graph) changes the export's
    output; export.json lists the options' defaults (the SignatureDef holds them for TF
    Serving)."""
    results = {name: served["results"][f"lm/generate_{name}"]["outputs"]
               for name, _ in LM_DECODINGS}
    greedy = results["greedy"]
    for name in ("top_k", "do_sample", "beams"):
        assert results[name]["token_ids"].shape == (2, 4)
    sampled = [results[n]["token_ids"].tolist() for n in ("top_k", "temperature", "top_p",
                                                           "do_sample")]
    assert len({str(t) for t in sampled + [greedy["token_ids"].tolist()]}) > 2
    assert (results["beams"]["log_prob"] >= greedy["log_prob"] - 1e-5).all()
    for name in ("stop", "beams_stop"):
        out = results[name]
        for r in range(2):
            n = out["num_tokens"][r]
            assert (out["token_ids"][r, :n] >= 0).all() and (out["token_ids"][r, n:] == -1).all()
    info = export.read_export_info(exported["cases"]["lm"].dir)["signatures"]["generate"]
    assert {k: v.get("default") for k, v in info["inputs"].items()} == {
        "text": None, "max_new_tokens": None, "top_k": None, "seed": None, "temperature": 1.0,
        "top_p": 1.0, "num_beams": 1, "do_sample": False, "stop": []}
    assert info["outputs"] == ["log_prob", "num_tokens", "text", "token_ids"]


def test_saved_model_cli_lists_both_signatures(served):
    for signature in ("serving_default", "serving_ids"):
        assert f"signature_def['{signature}']" in served["cli"]
    assert "inputs['text']" in served["cli"] and "inputs['segment_ids']" in served["cli"]


def test_predict_requests_match_signatures(exported, served):
    for name, case in exported["cases"].items():
        checked = served["requests"][name]
        assert sorted(c["signature"] for c in checked) == sorted(_signatures(case.dir))
        for c in checked:
            assert c["names"] and c["dtypes"], (name, c)
            assert "outputs" in c, (name, c.get("error"))


def test_warmup_requests(exported, served):
    for name, case in exported["cases"].items():
        path = os.path.join(case.dir, "assets.extra", export.WARMUP_FILE)
        logs = export.read_warmup(path)
        # A short and a full-width request per signature (rows are as wide as a request's
        # longest); the two collapse into one when seq_length is 8 or less.
        signatures = sorted(_signatures(case.dir))
        named = [log.predict_log.request.model_spec.signature_name for log in logs]
        assert sorted(set(named)) == signatures
        assert all(named.count(s) == 2 for s in signatures), named
        assert {log.predict_log.request.model_spec.name for log in logs} == \
            {os.path.basename(os.path.dirname(case.dir))}
        for signature, result in served["warmup"][name]:
            assert "outputs" in result, (name, signature, result.get("error"))


def test_layout_and_versions(exported):
    cases = exported["cases"]
    sst2 = cases["sst2"].dir
    assert os.path.basename(sst2) == "1" and os.path.basename(exported["second"]) == "2"
    assert _tree_digest(sst2) == exported["v1_digest"], "version 1 changed"
    for case in cases.values():
        for entry in ("saved_model.pb", "variables", "assets", "assets.extra"):
            assert os.path.exists(os.path.join(case.dir, entry)), (case.dir, entry)
    assert os.listdir(os.path.join(sst2, "assets")) == ["vocab.txt"]
    assert sorted(os.listdir(os.path.join(cases["lm"].dir, "assets"))) == ["merges.txt",
                                                                           "vocab.json"]
    leftovers = [d for d in os.listdir(exported["base"] / "sst2") if d.startswith(".tmp")]
    assert not leftovers


def test_exported_vocab_rebuilds_the_tokenizers(exported):
    wp, bpe = exported["tokenizers"]
    lm = exported["cases"]["lm"].dir
    files = export.read_export_info(lm)["tokenizer"]["files"]
    copy = GptBpeTokenizer(*(os.path.join(lm, "assets", files[k])
                             for k in ("encoder_file", "merges_file")))
    text = ["Hello there, it's 9:30 and we can't wait!"]
    assert copy.encode(text) == bpe.encode(text) and copy.vocab_size == bpe.vocab_size
    vocab = os.path.join(exported["cases"]["sst2"].dir, "assets", "vocab.txt")
    assert WordPieceTokenizer(vocab).vocab == wp.vocab


def test_op_audit(exported, served):
    cases = exported["cases"]
    raw = export.audit_ops(cases["sst2"].dir)
    assert {"FastBertNormalize", "FastWordpieceTokenizeWithOffsets"} <= set(raw)
    assert "NormalizeUTF8" in export.audit_ops(cases["lm"].dir)
    assert export.audit_ops(cases["sst2_ids"].dir) == []
    with open(os.path.join(cases["sst2"].dir, "assets.extra", export.OPS_FILE)) as f:
        assert json.load(f)["custom_ops"] == raw
    # The ids-only export loaded and ran in a process that never imported tensorflow-text.
    assert served["tf_text_imported_for_core_only"] is False
    info = export.read_export_info(cases["sst2_ids"].dir)
    assert info["ids_only"] and info["custom_ops"] == []
    assert sorted(info["signatures"]) == ["serving_default", "serving_ids"]


def test_failed_export_leaves_nothing(exported, monkeypatch, tmp_path):
    case = exported["cases"]["sst2"]
    wp, _ = exported["tokenizers"]
    export.export_saved_model(case.model, get_task("sst2"), wp, str(tmp_path), "m", SEQ,
                              ids_only=True, warmup=False)

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export.publish, "audit_ops", broken)  # where export_saved_model looks
    with pytest.raises(RuntimeError, match="disk full"):
        export.export_saved_model(case.model, get_task("sst2"), wp, str(tmp_path), "m", SEQ,
                                  ids_only=True)
    assert os.listdir(tmp_path / "m") == ["1"]


def test_export_rejects_bad_arguments(exported):
    case = exported["cases"]["sst2"]
    wp, bpe = exported["tokenizers"]
    with pytest.raises(ValueError, match="seq_length must be in"):
        export.build_serving_module(case.model, get_task("sst2"), wp, 10_000)
    with pytest.raises(ValueError, match="WordPieceTokenizer"):
        export.build_serving_module(case.model, get_task("sst2"), bpe, SEQ)
    with pytest.raises(ValueError, match="model_name"):
        export.export_saved_model(case.model, get_task("sst2"), wp, "/tmp", "../x", SEQ)


def test_export_and_predict_tools(exported, tmp_path, shared_data):
    """tools/export_model's and tools/predict's library paths: .keras -> export -> JSONL, and
    .keras -> in-process signature, giving the same predictions as the Keras model."""
    from tools import predict
    case = exported["cases"]["sst2"]
    model_path = str(tmp_path / "model.keras")
    case.model.save(model_path)
    vocab = str(shared_data / "bert_vocab/bert-base-uncased-vocab.txt")
    path = export.export_from_source(export.Source(model_path, vocab_file=vocab, seq_length=SEQ),
                                     str(tmp_path / "serving"))
    assert path.endswith(os.path.join("sst2", "1"))  # task inferred from the model's name
    lines = [t.encode() for t in TEXTS] + [BAD_UTF8]
    expected = next(c for c in case.calls if c.id == "sst2/text").expected["probabilities"]
    for source in ({"saved_model": os.path.dirname(path)},
                   {"keras_model": model_path, "vocab_file": vocab, "seq_length": SEQ}):
        fn, specs = predict.load_signature(**source)
        rows = predict.parse_lines(lines, specs)
        records = list(predict.predict(fn, specs, rows, batch_size=2, progress=False))
        assert [r["line"] for r in records] == [1, 2, 3, 4]
        np.testing.assert_allclose([r["probabilities"] for r in records[:3]], expected, atol=TOL)
        assert all(r["labels"] in ("0", "1") for r in records)
        json.dumps(records)
    # generate: the decoding flags reach the signature in each input's dtype.
    lm = exported["cases"]["lm"]
    fn, specs = predict.load_signature(saved_model=lm.dir, signature="generate")
    prompts = [b"The cat sat on the", b"hello world"]
    options = {"max_new_tokens": 3, "top_k": 0, "seed": 0, "temperature": 1.0, "top_p": 1.0,
               "num_beams": 2, "do_sample": False, "stop": ["e"]}
    records = list(predict.predict(fn, specs, predict.parse_lines(prompts, specs), batch_size=1,
                                   scalars=options, progress=False))
    direct = fn(**{k: tf.constant(v) for k, v in _generate_inputs(
        prompts, 3, num_beams=2, stop=[b"e"]).items()})
    assert [r["text"] for r in records] == [t.decode() for t in direct["text"].numpy()]
    assert [r["token_ids"] for r in records] == direct["token_ids"].numpy().tolist()
    json.dumps(records)
    pair_fn, pair_specs = predict.load_signature(saved_model=exported["cases"]["rte"].dir)
    with pytest.raises(ValueError, match=r"input:2: 1 tab-separated fields, expected 2"):
        predict.parse_lines([b"a\tb", b"no tab here"], pair_specs)


@pytest.mark.parametrize("input_format,task", [("bert", "swag"), ("gpt", "story_cloze")])
def test_multiple_choice_signature(tokenizers, input_format, task):
    """In-process (no export): context + question + endings [b, c] strings == the encoder."""
    from finetune.examples import ChoiceExample
    wp, bpe = tokenizers
    tokenizer = wp if input_format == "bert" else bpe
    spec = get_task(task)
    model = build_task_model(spec, _backbone(input_format, tokenizer))
    c = spec.num_choices
    examples = [ChoiceExample("a", "A man sits down at the piano.", "He",
                              ("plays a song.", "eats a cake " + "slowly " * 40, "runs.",
                               "sleeps.")[:c]),
                ChoiceExample("b", "Karen was assigned a roommate.", "",
                              ("They became friends.", "She hated pizza.", "x", "y")[:c])]
    encoded = encode_examples(examples, "multiple_choice", input_format, tokenizer, SEQ).inputs()
    probs = tf.nn.softmax(model(encoded, training=False)["logits"]).numpy()
    fn = export.build_serving_module(model, spec, tokenizer, SEQ).serving_signatures[
        "serving_default"]
    out = fn(context=tf.constant([e.context for e in examples]),
             question=tf.constant([e.question for e in examples]),
             endings=tf.constant([list(e.endings) for e in examples]))
    np.testing.assert_allclose(out["probabilities"].numpy(), probs, atol=TOL)
    np.testing.assert_array_equal(out["choice"].numpy(), probs.argmax(-1))
