"""Pretrained presets (tfmodels/presets.py): the registry's entries, and download, resume,
verification, unpacking, conversion and the cache against fixture checkpoints in each source
format served by a loopback HTTP server in a thread (never the internet)."""
import hashlib
import http.server
import io
import json
import os
import re
import shutil
import tarfile
import threading
import zipfile

import numpy as np
import pytest

from tests.test_checkpoints import write_tf1_checkpoint
from tfmodels import configs, presets
from tfmodels.bert import BertEncoder, BertPretrainer
from tfmodels.checkpoints import slots as slot_lib
from tfmodels.checkpoints.formats import load_checkpoint
from tfmodels.checkpoints.hf_bert import load_hf_bert, save_hf_bert
from tfmodels.checkpoints.openai_gpt import load_openai_gpt
from tfmodels.checkpoints.tf1_bert import canonical_to_tf1, load_tf1_bert
from tfmodels.gpt import GptLanguageModel
from tests.support import finetune_config

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
WORDS = ["the", "film", "is", "good", "bad", "a", "plot", "mess", "gripping", "beautiful"]
TINY_BERT = {"hidden_size": 16, "num_layers": 2, "num_heads": 2, "intermediate_size": 64,
             "max_positions": 32, "type_vocab_size": 2}


# ---- a loopback server that honours Range and can cut a response short ----------------------

class FileServer:
    """Serves `files` (url path -> bytes) on 127.0.0.1; records each request's path and Range
    header; `cut[path] = n` sends only the first n bytes of the next response for that path
    (with the full Content-Length) and closes the connection."""

    def __init__(self):
        self.files, self.cut, self.requests = {}, {}, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if match:
                    start = int(match.group(1))
                    if start >= len(data):
                        self.send_error(416, "Range Not Satisfiable")
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                keep = server.cut.pop(self.path, None)
                self.wfile.write(body if keep is None else body[:keep])
                if keep is not None:
                    self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        if self.thread.is_alive():
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join()


@pytest.fixture
def server():
    served = FileServer()
    yield served
    served.stop()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache and a registry file of the test's own presets (`write(entries)`)."""
    home = tmp_path / "home"
    registry_file = tmp_path / "registry.json"
    monkeypatch.setenv("BERT_GPT_TF_HOME", str(home))

    def write(entries):
        registry_file.write_text(json.dumps({"presets": entries}))
        monkeypatch.setenv(presets.EXTRA_REGISTRY_ENV, str(registry_file))
        return presets.load_registry()
    write.home = home
    write.root = home / "presets"
    return write


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def bert_entry(sources, config=None, lower_case=True):
    return {"description": "a test BERT", "architecture": "bert", "license": "Apache-2.0",
            "lower_case": lower_case, "config": config, "sources": sources}


# ---- fixture checkpoints in each source format ----------------------------------------------

@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A tiny BertPretrainer (random weights, MLM/NSP heads) with its vocabulary, written as a
    google-research/bert folder and as a Hugging Face folder."""
    root = tmp_path_factory.mktemp("tiny_bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + [f"##{w}" for w in WORDS]
    vocab_file = root / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    config = {"vocab_size": len(vocab), **TINY_BERT}
    model = BertPretrainer(configs.BertConfig(**config), seed=3)
    arrays = slot_lib.read_slots(slot_lib.bert_slots(model))
    tf1 = root / "uncased_L-2_H-16_A-2"
    tf1.mkdir()
    write_tf1_checkpoint(canonical_to_tf1(arrays, 2), str(tf1 / "bert_model.ckpt"))
    shutil.copyfile(vocab_file, tf1 / "vocab.txt")
    (tf1 / "bert_config.json").write_text(json.dumps({
        "vocab_size": len(vocab), "hidden_size": 16, "num_hidden_layers": 2,
        "num_attention_heads": 2, "intermediate_size": 64, "hidden_act": "gelu",
        "max_position_embeddings": 32, "type_vocab_size": 2}))
    save_hf_bert(model, str(vocab_file), str(root / "hf"))
    return {"tf1": tf1, "hf": root / "hf", "config": config, "root": root}


def zip_folder(folder, top=None) -> bytes:
    """The folder as a zip, under `top/` as Google's release zips are (or flat)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(os.listdir(folder)):
            archive.write(os.path.join(folder, name), f"{top}/{name}" if top else name)
    return buffer.getvalue()


def bert_inputs(vocab_size, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab_size, size=(2, 9)).astype("int32")
    ids[:, 0], ids[1, 6:] = 2, 0
    return {"input_ids": ids, "segment_ids": (np.arange(9) >= 4).astype("int32")[None].repeat(2, 0),
            "input_mask": (ids > 0).astype("int32")}


# ---- the registry ---------------------------------------------------------------------------

def test_every_registry_entry_is_complete():
    registry = presets.load_registry([presets.REGISTRY_FILE])
    names = set(registry)
    assert {"bert_base_uncased", "bert_base_cased", "bert_large_uncased", "bert_large_cased",
            "bert_large_uncased_whole_word_masking", "bert_large_cased_whole_word_masking",
            "openai_gpt", "all_minilm_l6_v2"} <= names
    seen = {}
    for preset in registry.values():
        assert preset.description and preset.license and preset.sources, preset.name
        assert preset.license == ("MIT" if preset.architecture == "gpt" else "Apache-2.0")
        assert preset.model_config().num_heads == preset.config["num_heads"]
        for source in preset.sources:
            assert source["format"] in presets.ARCHITECTURE_FORMATS[preset.architecture]
            where = source.get("url") or source.get("base_url") or source.get("package")
            assert where, (preset.name, source)
            for spec in source.get("files", ()):
                if spec.get("sha256"):
                    assert re.fullmatch(r"[0-9a-f]{64}", spec["sha256"]), preset.name
        # the original release first, a mirror second (MiniLM: the installed package first)
        first = preset.sources[0]
        assert first.get("kind") == "python_package" or "huggingface.co" not in (
            first.get("url") or first.get("base_url")), preset.name
        assert any("huggingface.co" in (s.get("url") or s.get("base_url") or "")
                   for s in preset.sources), preset.name
        for alias in (preset.name, *preset.aliases):  # no name means two presets
            key = presets.normalise_name(alias)
            assert seen.setdefault(key, preset.name) == preset.name, alias
    assert presets.get_preset("openai-gpt", registry).name == "openai_gpt"
    assert presets.get_preset("bert-base-uncased", registry).name == "bert_base_uncased"
    assert not presets.get_preset("bert_base_cased", registry).lower_case


def test_a_broken_entry_is_named(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"presets": {"mine": bert_entry(
        [{"kind": "archive", "format": "openai_gpt", "url": "x.zip"}],
        {"vocab_size": 10, **TINY_BERT})}}))
    with pytest.raises(ValueError, match=r"bad.json: preset 'mine': source 0: format "
                                         r"'openai_gpt' cannot hold a bert model"):
        presets.load_registry([str(bad)])
    with pytest.raises(ValueError, match="unknown preset 'bert_base_uncasd'; did you mean "
                                         "bert_base_uncased"):
        presets.get_preset("bert_base_uncasd")


def test_the_24_miniatures_match_their_names():
    registry = presets.load_registry([presets.REGISTRY_FILE])
    found = {}
    for name, preset in registry.items():
        match = re.fullmatch(r"bert_uncased_L-(\d+)_H-(\d+)_A-(\d+)", name)
        if not match:
            continue
        layers, hidden, heads = map(int, match.groups())
        found[(layers, hidden)] = preset
        assert heads == hidden // 64
        assert preset.config == {"vocab_size": 30522, "hidden_size": hidden,
                                 "num_layers": layers, "num_heads": heads,
                                 "intermediate_size": 4 * hidden, "max_positions": 512,
                                 "type_vocab_size": 2}, name
        archive, mirror = preset.sources
        assert archive["url"] == ("https://storage.googleapis.com/bert_models/2020_02_20/"
                                  f"uncased_L-{layers}_H-{hidden}_A-{heads}.zip")
        assert mirror["base_url"] == (f"https://huggingface.co/google/bert_uncased_L-{layers}_"
                                      f"H-{hidden}_A-{heads}/resolve/main/")
    assert sorted(found) == [(l, h) for l in (2, 4, 6, 8, 10, 12) for h in (128, 256, 512, 768)]
    # the paper-named sizes are our named configs
    for (layers, hidden), size in {(2, 128): "tiny", (4, 256): "mini", (4, 512): "small",
                                   (8, 512): "medium"}.items():
        assert found[(layers, hidden)].model_config() == configs.get_config(f"bert_{size}")
        assert presets.get_preset(f"bert_{size}_uncased", registry) is found[(layers, hidden)]


def test_parameter_count_is_the_built_models():
    bert = configs.BertConfig(vocab_size=50, **TINY_BERT)
    assert presets.count_parameters(bert) == BertEncoder(bert).count_params()
    gpt = configs.GptConfig(vocab_size=60, hidden_size=16, num_layers=2, num_heads=2,
                            intermediate_size=64, max_positions=32)
    assert presets.count_parameters(gpt) == GptLanguageModel(gpt).count_params()


# ---- fetching, converting, caching ----------------------------------------------------------

def test_tf1_zip_downloads_converts_once_and_is_cached(server, cache, tiny_bert):
    data = zip_folder(tiny_bert["tf1"], top="uncased_L-2_H-16_A-2")
    server.files["/bert/tiny.zip"] = data
    cache({"tiny_tf1": bert_entry([{"kind": "archive", "format": "tf1_bert",
                                    "url": server.url + "/bert/tiny.zip", "size": len(data),
                                    "sha256": sha256(data)}], tiny_bert["config"])})
    model = load_checkpoint("preset:tiny_tf1")
    folder = cache.root / "tiny_tf1" / "model"
    assert sorted(os.listdir(folder)) == ["preset.json", "pretrained.keras", "vocab.txt"]
    stamp = json.loads((folder / "preset.json").read_text())
    assert stamp["source"]["sha256"] == {"tiny.zip": sha256(data)} and stamp["format"] == "tf1_bert"
    assert sorted(os.listdir(cache.root / "tiny_tf1")) == [".lock", "model"]  # scratch deleted
    # the converted model computes what the converter gives on the same files
    reference, _ = load_tf1_bert(str(tiny_bert["tf1"]))
    assert isinstance(model, BertPretrainer)
    inputs = {**bert_inputs(tiny_bert["config"]["vocab_size"]),
              "masked_lm_positions": np.array([[1, 2], [3, 4]], "int32")}
    for key, value in reference(inputs).items():
        np.testing.assert_array_equal(model(inputs)[key], value, err_msg=key)

    server.stop()   # the cache answers without the network
    requests = len(server.requests)
    encoder = BertEncoder.from_preset("tiny_tf1")
    assert len(server.requests) == requests == 1
    np.testing.assert_array_equal(encoder(inputs)["sequence_output"],
                                  reference.encoder(inputs)["sequence_output"])
    assert presets.resolve_checkpoint("preset:tiny-TF1") == str(folder)


def test_a_cut_download_resumes_with_a_range_request(server, cache, tiny_bert):
    data = zip_folder(tiny_bert["tf1"])   # flat, as the 2020 miniature zips are
    server.files["/tiny.zip"] = data
    server.cut["/tiny.zip"] = len(data) // 3
    registry = cache({"tiny": bert_entry([{"kind": "archive", "format": "tf1_bert",
                                           "url": server.url + "/tiny.zip",
                                           "sha256": sha256(data)}], tiny_bert["config"])})
    messages = []
    folder = presets.resolve_preset("tiny", registry, log=messages.append)
    assert server.requests == [("/tiny.zip", None), ("/tiny.zip", f"bytes={len(data) // 3}-")]
    assert any("connection cut" in m for m in messages)
    assert any(f"resuming {server.url}/tiny.zip at byte {len(data) // 3}" in m for m in messages)
    assert os.path.isfile(os.path.join(folder, "pretrained.keras"))


def test_a_partial_file_left_by_a_killed_run_is_resumed(server, cache, tiny_bert):
    data = zip_folder(tiny_bert["tf1"])
    server.files["/tiny.zip"] = data
    registry = cache({"tiny": bert_entry([{"kind": "archive", "format": "tf1_bert",
                                           "url": server.url + "/tiny.zip",
                                           "size": len(data)}], tiny_bert["config"])})
    part = cache.root / "tiny" / "downloads" / "0" / "tiny.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:1000])
    presets.resolve_preset("tiny", registry, log=lambda m: None)
    assert server.requests == [("/tiny.zip", "bytes=1000-")]


def test_a_checksum_mismatch_is_named_and_nothing_is_cached(server, cache, tiny_bert):
    data = zip_folder(tiny_bert["tf1"])
    server.files["/tiny.zip"] = data
    registry = cache({"tiny": bert_entry([{"kind": "archive", "format": "tf1_bert",
                                           "url": server.url + "/tiny.zip",
                                           "sha256": "0" * 64}], tiny_bert["config"])})
    with pytest.raises(presets.ChecksumMismatch) as error:
        presets.resolve_preset("tiny", registry, log=lambda m: None)
    message = str(error.value)
    assert message.startswith(f"preset tiny: {server.url}/tiny.zip gave sha256 {sha256(data)}, "
                              f"the registry expects {'0' * 64}")
    assert "nothing was cached" in message and "\n" not in message
    left = [os.path.join(d, f) for d, _, files in os.walk(cache.root / "tiny") for f in files]
    assert left == [str(cache.root / "tiny" / ".lock")]


def test_an_archive_member_outside_the_target_is_refused(server, cache, tiny_bert, tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("bert_config.json", "{}")
        archive.writestr("../escaped.txt", "outside")
    server.files["/evil.zip"] = buffer.getvalue()
    tar_buffer = io.BytesIO()
    with tarfile.open(fileobj=tar_buffer, mode="w:gz") as archive:
        link = tarfile.TarInfo("model/vocab.txt")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    server.files["/evil.tar.gz"] = tar_buffer.getvalue()
    registry = cache({
        "evil_zip": bert_entry([{"kind": "archive", "format": "tf1_bert",
                                 "url": server.url + "/evil.zip"}], tiny_bert["config"]),
        "evil_tar": bert_entry([{"kind": "archive", "format": "tf1_bert",
                                 "url": server.url + "/evil.tar.gz"}], tiny_bert["config"])})
    with pytest.raises(ValueError, match=r"member '\.\./escaped\.txt' lies outside the target "
                                         r"folder: archive refused"):
        presets.resolve_preset("evil_zip", registry, log=lambda m: None)
    with pytest.raises(ValueError, match=r"member 'model/vocab\.txt' is refused \(\w+Error"):
        presets.resolve_preset("evil_tar", registry, log=lambda m: None)
    for name in ("evil_zip", "evil_tar"):
        assert sorted(os.listdir(cache.root / name)) == [".lock", "downloads"]
        assert not os.listdir(cache.root / name / "downloads" / "0")  # the archive deleted
    assert not list(cache.root.rglob("escaped.txt")) and not (cache.home / "escaped.txt").exists()


def test_hf_files_with_a_torch_bin_only_mirror(server, cache, tiny_bert):
    """The first source is down; the mirror has no model.safetensors, so pytorch_model.bin is
    read with torch's weights_only loader."""
    torch = pytest.importorskip("torch")
    from safetensors.numpy import load_file
    hf = tiny_bert["hf"]
    state = {k: torch.from_numpy(v) for k, v in load_file(str(hf / "model.safetensors")).items()}
    bin_buffer = io.BytesIO()
    torch.save(state, bin_buffer)
    server.files["/hf/pytorch_model.bin"] = bin_buffer.getvalue()
    for name in ("config.json", "vocab.txt"):
        server.files[f"/hf/{name}"] = (hf / name).read_bytes()
    vocab = (hf / "vocab.txt").read_bytes()
    registry = cache({"tiny_hf": bert_entry([
        {"kind": "archive", "format": "tf1_bert", "url": server.url + "/gone/tiny.zip"},
        {"kind": "files", "format": "hf_bert", "base_url": server.url + "/hf/",
         "files": [{"name": "config.json"}, {"name": ["model.safetensors", "pytorch_model.bin"]},
                   {"name": "vocab.txt", "size": len(vocab), "sha256": sha256(vocab)}]}],
        tiny_bert["config"])})
    messages = []
    folder = presets.resolve_preset("tiny_hf", registry, log=messages.append)
    assert "source 0 unavailable" in messages[0] and "HTTP 404" in messages[0]
    assert [path for path, _ in server.requests] == [
        "/gone/tiny.zip", "/hf/config.json", "/hf/model.safetensors", "/hf/pytorch_model.bin",
        "/hf/vocab.txt"]
    stamp = json.loads(open(os.path.join(folder, "preset.json")).read())
    assert set(stamp["source"]["sha256"]) == {"config.json", "pytorch_model.bin", "vocab.txt"}
    reference, _ = load_hf_bert(str(hf))
    model = load_checkpoint(folder)
    inputs = bert_inputs(tiny_bert["config"]["vocab_size"], seed=1)
    np.testing.assert_array_equal(model.encoder(inputs)["pooled_output"],
                                  reference.encoder(inputs)["pooled_output"])


def test_openai_npy_shards_and_a_file_url(cache, tmp_path):
    """The OpenAI release layout, from a file:// base URL: the same path as a download."""
    release = tmp_path / "release"
    shutil.copytree(os.path.join(FIXTURES, "tiny_openai_gpt", "npy"), release)
    (release / "encoder_bpe_40000.json").write_text(json.dumps({f"t{i}</w>": i
                                                                for i in range(200)}))
    (release / "vocab_40000.bpe").write_text("#version: 0.2\nt 0</w>\n")
    names = sorted(os.listdir(release))
    cache({"tiny_gpt": {
        "description": "a test GPT", "architecture": "gpt", "license": "MIT", "lower_case": True,
        "config": {"vocab_size": 203, "hidden_size": 32, "num_layers": 2, "num_heads": 4,
                   "intermediate_size": 128, "max_positions": 32},
        "sources": [{"kind": "files", "format": "openai_gpt", "base_url": release.as_uri(),
                     "files": [{"name": n} for n in names]}]}})
    model = GptLanguageModel.from_preset("tiny-gpt")
    reference = load_openai_gpt(str(release), num_heads=4)
    ids = np.array([[1, 5, 9, 200, 3, 7]], "int32")
    np.testing.assert_array_equal(model({"input_ids": ids})["logits"],
                                  reference({"input_ids": ids})["logits"])
    folder = cache.root / "tiny_gpt" / "model"
    assert {"encoder_bpe_40000.json", "vocab_40000.bpe"} <= set(os.listdir(folder))
    with pytest.raises(ValueError, match="preset tiny_gpt holds a GptLanguageModel, not a BERT"):
        BertEncoder.from_preset("tiny_gpt")


def test_a_checkpoint_unlike_its_registry_config_is_refused(cache, tiny_bert):
    registry = cache({"wrong": bert_entry(
        [{"kind": "files", "format": "hf_bert", "base_url": str(tiny_bert["hf"]),
          "files": [{"name": n} for n in ("config.json", "model.safetensors", "vocab.txt")]}],
        {**tiny_bert["config"], "num_layers": 4})})
    with pytest.raises(ValueError, match=r"preset wrong: .* is not the registry's model: "
                                         r"num_layers: 2 in the checkpoint, 4 in the registry"):
        presets.resolve_preset("wrong", registry, log=lambda m: None)
    assert not (cache.root / "wrong" / "model").exists()


def test_offline_is_one_line_naming_the_urls_and_the_folder(cache, tiny_bert):
    dead = FileServer()
    dead.stop()   # a port nobody listens on
    registry = cache({"offline": bert_entry(
        [{"kind": "archive", "format": "tf1_bert", "url": dead.url + "/release.zip"},
         {"kind": "files", "format": "hf_bert", "base_url": dead.url + "/mirror/",
          "files": [{"name": "config.json"}]}], tiny_bert["config"])})
    with pytest.raises(presets.PresetUnavailable) as error:
        presets.resolve_preset("offline", registry, log=lambda m: None)
    message = str(error.value)
    assert "\n" not in message and message.startswith("preset offline: no source could be fetched")
    assert f"{dead.url}/release.zip" in message and f"{dead.url}/mirror/config.json" in message
    assert str(cache.root / "offline" / "downloads" / "0" / "release.zip") in message


def test_a_file_placed_by_hand_is_verified_and_used(cache, tiny_bert):
    data = zip_folder(tiny_bert["tf1"])
    registry = cache({"by_hand": bert_entry(
        [{"kind": "archive", "format": "tf1_bert", "url": "http://127.0.0.1:9/tiny.zip",
          "sha256": sha256(data)}], tiny_bert["config"])})
    placed = cache.root / "by_hand" / "downloads" / "0" / "tiny.zip"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(data)
    folder = presets.resolve_preset("by_hand", registry, log=lambda m: None)
    assert os.path.isfile(os.path.join(folder, "pretrained.keras"))


def test_text_classifier_from_the_minilm_preset_uses_the_installed_package(
        cache, minilm_dir):
    from finetune import TextClassifier
    cache({})   # the built-in registry only, in an empty cache
    clf = TextClassifier.from_preset("all_minilm_l6_v2", num_classes=2, seq_length=32)
    folder = cache.root / "all_minilm_l6_v2" / "model"
    stamp = json.loads((folder / "preset.json").read_text())
    assert stamp["source"]["folder"] == str(minilm_dir) and stamp["format"] == "hf_bert"
    assert stamp["source"]["sha256"]["model.safetensors"] == (
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db")
    reference = np.load(os.path.join(FIXTURES, "minilm_reference.npz"))
    inputs = {k: reference[k] for k in ("input_ids", "segment_ids", "input_mask")}
    sequence = clf.task_model.backbone(inputs)["sequence_output"].numpy()
    real = inputs["input_mask"].astype(bool)
    assert np.abs(sequence[real] - reference["sequence_output"][real]).max() <= 1e-4
    assert clf.predict(["a gripping, beautiful film"]).shape == (1, 2)


def test_finetuning_takes_preset_init_checkpoints(cache, tiny_bert, tmp_path):
    from finetune.trainer import FinetuneConfig, load_pretrained
    cache({"tiny_local": bert_entry(
        [{"kind": "files", "format": "hf_bert", "base_url": str(tiny_bert["hf"]),
          "files": [{"name": n} for n in ("config.json", "model.safetensors", "vocab.txt")]}],
        tiny_bert["config"])})
    config = finetune_config(task="sst2", data_dir="d", output_dir=str(tmp_path / "run"),
                            init_checkpoint="preset:tiny_local", seq_length=32)
    pretrained = load_pretrained(config, log=lambda m: None)
    reference, _ = load_hf_bert(str(tiny_bert["hf"]))
    assert pretrained.model_config == reference.config
    assert pretrained.checkpoint_format == "keras"   # the cached conversion
    for ours, theirs in zip(pretrained.weights, reference.encoder.get_weights()):
        np.testing.assert_array_equal(ours, theirs)
    assert pretrained.tokenizer.vocab_size == tiny_bert["config"]["vocab_size"]
    with pytest.raises(ValueError, match="init_checkpoint preset:bert_base_cased is cased: pass "
                                         "--nolower_case"):
        finetune_config(task="sst2", data_dir="d", output_dir="o",
                       init_checkpoint="preset:bert_base_cased")
    with pytest.raises(ValueError, match="init_checkpoint preset:openai_gpt is a gpt model, but "
                                         "model is 'bert'"):
        finetune_config(task="sst2", data_dir="d", output_dir="o",
                       init_checkpoint="preset:openai_gpt")


def test_the_binary_lists_the_table_and_reports_offline_in_one_line(cache, tiny_bert):
    import subprocess
    import sys
    from tests.support import PROJECT_ROOT
    dead = FileServer()
    dead.stop()
    cache({"offline": bert_entry([{"kind": "archive", "format": "tf1_bert",
                                   "url": dead.url + "/release.zip"}], tiny_bert["config"])})
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": str(PROJECT_ROOT)}
    listed = subprocess.run([sys.executable, "-m", "tools.presets"], cwd=PROJECT_ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr[-2000:]
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["name", "model", "parameters", "size", "licence", "cached"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert len(rows) == len(presets.load_registry())
    assert rows["bert_base_uncased"] == ["bert_base_uncased", "bert", "109,482,240", "~438", "MB",
                                         "Apache-2.0", "no"]
    assert rows["openai_gpt"][2] == "116,537,088" and rows["offline"][-1] == "no"
    fetched = subprocess.run([sys.executable, "-m", "tools.presets", "--fetch=offline"],
                             cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                             timeout=300)
    assert fetched.returncode == 2
    errors = [l for l in fetched.stderr.splitlines() if ": error: " in l]
    assert len(errors) == 1 and errors[0].startswith("presets.py: error: preset offline: no "
                                                     "source could be fetched")


def test_bert_gpt_convert_reads_a_preset(cache, tiny_bert, tmp_path):
    from tools.convert_checkpoint import convert
    cache({"tiny_local": bert_entry(
        [{"kind": "files", "format": "hf_bert", "base_url": str(tiny_bert["hf"]),
          "files": [{"name": n} for n in ("config.json", "model.safetensors", "vocab.txt")]}],
        tiny_bert["config"])})
    convert(None, "hf_bert", "preset:tiny_local", str(tmp_path / "hf"))   # its vocab beside it
    from safetensors.numpy import load_file
    original = load_file(str(tiny_bert["hf"] / "model.safetensors"))
    written = load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert set(written) == set(original)
    for name, value in written.items():
        np.testing.assert_array_equal(value, original[name], err_msg=name)
    vocab = (tiny_bert["hf"] / "vocab.txt").read_bytes()
    assert (tmp_path / "hf" / "vocab.txt").read_bytes() == vocab
