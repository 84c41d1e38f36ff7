"""Pretrained presets: the checkpoints the BERT and GPT-1 authors released, by name,
downloaded, verified, converted once and cached.

    from tfmodels.presets import resolve_preset
    folder = resolve_preset("bert_base_uncased")    # <cache>/bert_base_uncased/model
    # folder holds pretrained.keras + the tokenizer files: any `init_checkpoint` takes it, and
    # `preset:bert_base_uncased` works wherever a checkpoint path does (checkpoints/formats.py)

The registry is data: `tfmodels/presets.json` (name, aliases, description, architecture and
the config the checkpoint converts to, lower_case, licence, and its sources in the order they
are tried: the original release first, a mirror second). Files named in
$BERT_GPT_TF_PRESETS (os.pathsep-separated, same layout) add entries or replace ones of the
same name: private checkpoints, or a local copy of a release. Names match case-insensitively
with `-` and `_` alike, so `openai-gpt`, `bert-base-uncased` and `all-MiniLM-L6-v2` work.

A source is one of
  archive         one .zip / .tar(.gz) at `url`, unpacked; the checkpoint folder inside is found
                  by its files (checkpoints/formats.py).
  files           `files` under `base_url`; a name given as a list is a choice in order of
                  preference (e.g. model.safetensors, else pytorch_model.bin).
  python_package  the folder `path` inside an installed Python package (`package`, pip name
                  `pip`): no download at all.
`url` / `base_url` may be http(s)://, file:// or a plain local path; all go through the same
verification, unpacking and conversion. Each file may carry `size` and `sha256`, checked when
given (the registry gives them only where they are known; see presets.json's comment).

Cache ($BERT_GPT_TF_HOME/presets, else ~/.cache/bert_gpt_tf/presets, the folder
tfmodels/precision.py keeps its calibration in), one folder per preset:
  downloads/<source>/   what was fetched: `<file>.part` while incomplete (a rerun, or the
                        next attempt after a cut connection, resumes it with an HTTP Range
                        request); a file placed here by hand is used (and verified) as is
  unpacked/             an archive's members (members outside it are refused)
  model/                pretrained.keras (our format: the conversion runs once), the tokenizer
                        files, preset.json (what it came from, every file's sha256, and the key
                        of the registry entry it was built for)
downloads/ and unpacked/ are deleted once model/ is complete, so a cached preset costs its
weights once on disk. A cached model/ whose key matches the registry entry is used without
touching the network; if the entry changes (a new sha256, another config) the preset is
fetched again. A failed download, a checksum mismatch or a refused archive leaves no model/.

No pickle: weights are read from safetensors, TF checkpoints or .npy; a `pytorch_model.bin`
(Hugging Face mirrors that have no safetensors file) is read with torch's `weights_only`
loader and rewritten as model.safetensors before conversion.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import http.client
import importlib.util
import json
import os
import shutil
import socket
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from tfmodels import configs
from tfmodels.files import atomic_directory, atomic_write_text
from tfmodels.folder_lock import exclusive_folder

PRESET_PREFIX = "preset:"
REGISTRY_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "presets.json")
EXTRA_REGISTRY_ENV = "BERT_GPT_TF_PRESETS"
SOURCE_KINDS = ("archive", "files", "python_package")
SOURCE_FORMATS = ("tf1_bert", "hf_bert", "openai_gpt", "hf_gpt")
ARCHITECTURE_FORMATS = {"bert": ("tf1_bert", "hf_bert"), "gpt": ("openai_gpt", "hf_gpt")}
REQUIRED_FIELDS = ("description", "architecture", "config", "license", "sources", "lower_case")
# Part of every cache key: raise it when the conversion's output changes.
CONVERSION_VERSION = 1
TIMEOUT_SECONDS = 60
# Attempts per file when a connection is cut; each resumes where the last one stopped.
ATTEMPTS = 4
CHUNK_BYTES = 1 << 20
SIZE_UNIT = 1 << 10


class PresetUnavailable(OSError):
    """No source of a preset could be fetched (offline, unreachable, not installed)."""


class SourceUnavailable(OSError):
    """One source could not be fetched; the next one is tried."""


class NotOnSource(SourceUnavailable):
    """The source has no such file (HTTP 404, a missing local file): a listed alternative
    name is tried next."""


class ChecksumMismatch(ValueError):
    """A fetched file is not the one the registry names: nothing is kept or cached."""


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    description: str
    architecture: str
    config: Dict
    license: str
    lower_case: bool
    sources: Tuple[Dict, ...]
    aliases: Tuple[str, ...] = ()

    def model_config(self):
        """The BertConfig / GptConfig the checkpoint converts to (dropout etc. at defaults)."""
        cls = configs.BertConfig if self.architecture == "bert" else configs.GptConfig
        return cls.from_dict(self.config)

    @property
    def parameters(self) -> int:
        return count_parameters(self.model_config())

    @property
    def key(self) -> str:
        """What the cached conversion depends on: the entry's config and sources (their URLs,
        sizes and sha256) and the conversion's version."""
        text = json.dumps({"architecture": self.architecture, "config": self.config,
                           "sources": self.sources, "conversion": CONVERSION_VERSION},
                          sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def count_parameters(cfg) -> int:
    """The backbone's weights (BertEncoder with pooler / GptDecoder; no MLM, NSP or LM-head
    weights beyond the tied embedding), from the config alone: no model is built."""
    h, i = cfg.hidden_size, cfg.intermediate_size
    layer = (3 * h * h + 3 * h) + (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h
    positions = cfg.max_positions * h
    if isinstance(cfg, configs.BertConfig):
        embeddings = (cfg.vocab_size + cfg.type_vocab_size) * h + positions + 2 * h
        return embeddings + cfg.num_layers * layer + (h * h + h)
    return cfg.vocab_size * h + positions + cfg.num_layers * layer


# ---- the registry ---------------------------------------------------------------------------

def normalise_name(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def _file_names(spec: Dict) -> List[str]:
    names = spec.get("name")
    return [names] if isinstance(names, str) else list(names or [])


def check_entry(name: str, entry: Dict, where: str) -> None:
    """ValueError naming `where` and the preset unless the entry is complete and consistent."""
    problems = [f"no {field!r}" for field in REQUIRED_FIELDS if field not in entry]
    if entry.get("architecture") not in ARCHITECTURE_FORMATS:
        problems.append(f"architecture {entry.get('architecture')!r} is not bert or gpt")
    if not entry.get("sources"):
        problems.append("no sources")
    for n, source in enumerate(entry.get("sources") or ()):
        kind, fmt = source.get("kind"), source.get("format")
        if kind not in SOURCE_KINDS:
            problems.append(f"source {n}: kind {kind!r} is not one of {SOURCE_KINDS}")
        if fmt not in ARCHITECTURE_FORMATS.get(entry.get("architecture"), ()):
            problems.append(f"source {n}: format {fmt!r} cannot hold a "
                            f"{entry.get('architecture')} model")
        if kind == "archive" and not source.get("url"):
            problems.append(f"source {n}: an archive needs a url")
        if kind == "files" and not (source.get("base_url") and source.get("files")
                                    and all(_file_names(f) for f in source["files"])):
            problems.append(f"source {n}: files need a base_url and named files")
        if kind == "python_package" and not source.get("package"):
            problems.append(f"source {n}: a python_package needs a package")
    if not problems:
        try:
            Preset(name, **{k: entry[k] for k in REQUIRED_FIELDS}).model_config()
        except (TypeError, ValueError) as error:
            problems.append(f"config: {error}")
    if problems:
        raise ValueError(f"{where}: preset {name!r}: {'; '.join(problems)}")


def _read_registry_file(path: str) -> Dict[str, Dict]:
    try:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    presets = document.get("presets") if isinstance(document, dict) else None
    if not isinstance(presets, dict):
        raise ValueError(f"{path}: expected {{\"presets\": {{name: entry, ...}}}}")
    for name, entry in presets.items():
        check_entry(name, entry, path)
    return presets


def load_registry(paths: Optional[Sequence[str]] = None) -> Dict[str, Preset]:
    """Name -> Preset from presets.json, then the files in $BERT_GPT_TF_PRESETS (or `paths`
    instead of both), later files replacing entries of the same name."""
    if paths is None:
        extra = os.environ.get(EXTRA_REGISTRY_ENV, "")
        paths = [REGISTRY_FILE] + [p for p in extra.split(os.pathsep) if p]
    entries: Dict[str, Dict] = {}
    for path in paths:
        entries.update(_read_registry_file(path))
    return {name: Preset(name=name, description=e["description"],
                         architecture=e["architecture"], config=dict(e["config"]),
                         license=e["license"], lower_case=bool(e["lower_case"]),
                         sources=tuple(e["sources"]), aliases=tuple(e.get("aliases", ())))
            for name, e in entries.items()}


def get_preset(name: str, registry: Optional[Dict[str, Preset]] = None) -> Preset:
    """The preset called `name` (or one of its aliases); ValueError with close matches."""
    registry = load_registry() if registry is None else registry
    wanted = normalise_name(name)
    for preset in registry.values():
        if wanted in {normalise_name(n) for n in (preset.name, *preset.aliases)}:
            return preset
    close = difflib.get_close_matches(wanted, [normalise_name(n) for n in registry], n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown preset {name!r}{hint} (bert-gpt-presets lists them)")


# ---- the cache ------------------------------------------------------------------------------

def cache_root() -> str:
    """$BERT_GPT_TF_HOME/presets, else ~/.cache/bert_gpt_tf/presets."""
    home = os.environ.get("BERT_GPT_TF_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache", "bert_gpt_tf")
    return os.path.join(home, "presets")


def cached_model_dir(preset: Preset, cache_dir: Optional[str] = None) -> Optional[str]:
    """The preset's converted model folder if it is cached for the current registry entry."""
    folder = os.path.join(cache_dir or cache_root(), preset.name, "model")
    try:
        with open(os.path.join(folder, "preset.json"), encoding="utf-8") as f:
            stamp = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    complete = os.path.isfile(os.path.join(folder, "pretrained.keras"))
    return folder if complete and stamp.get("key") == preset.key else None


def _stderr(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def resolve_preset(name: str, registry: Optional[Dict[str, Preset]] = None,
                   cache_dir: Optional[str] = None, log: Callable[[str], None] = _stderr,
                   progress: bool = True) -> str:
    """The local folder of preset `name` converted to our format (pretrained.keras beside its
    tokenizer files), fetching and converting it on first use (see the module docstring).

    PresetUnavailable (an OSError) when no source can be fetched, naming the URLs tried and
    where to put the files by hand; ChecksumMismatch (a ValueError) when a file is not the
    registry's; ValueError for a refused archive or a checkpoint unlike the registry's config.
    """
    preset = get_preset(name, registry)
    cache_dir = cache_dir or cache_root()
    cached = cached_model_dir(preset, cache_dir)
    if cached:
        return cached
    entry = os.path.join(cache_dir, preset.name)
    with exclusive_folder(entry, f"fetching preset {preset.name}"):
        cached = cached_model_dir(preset, cache_dir)  # another process may have finished it
        if cached:
            return cached
        failures = []
        for index, source in enumerate(preset.sources):
            try:
                folder, provenance = _fetch_source(preset, index, source, entry, log, progress)
            except SourceUnavailable as error:
                failures.append(str(error))
                log(f"preset {preset.name}: source {index} unavailable: {error}")
                continue
            model_dir = _convert(preset, folder, source["format"], provenance, entry, log)
            for scratch in ("downloads", "unpacked"):
                shutil.rmtree(os.path.join(entry, scratch), ignore_errors=True)
            return model_dir
        raise PresetUnavailable(
            f"preset {preset.name}: no source could be fetched: {'; '.join(failures)}. "
            f"Offline? Fetch one source elsewhere and put its file(s) in "
            f"{os.path.join(entry, 'downloads', '<source number>')}/ (e.g. "
            f"{_hand_placed_example(preset, entry)}), then rerun; or point an entry in "
            f"${EXTRA_REGISTRY_ENV} at a local path or file:// URL")


def _hand_placed_example(preset: Preset, entry: str) -> str:
    for index, source in enumerate(preset.sources):
        if source["kind"] == "archive":
            return os.path.join(entry, "downloads", str(index), _url_file_name(source["url"]))
        if source["kind"] == "files":
            return os.path.join(entry, "downloads", str(index), _file_names(source["files"][0])[0])
    return os.path.join(entry, "downloads", "0", "<file>")


# ---- fetching -------------------------------------------------------------------------------

def _is_remote(url: str) -> bool:
    return urllib.parse.urlparse(url).scheme in ("http", "https")


def _local_path(url: str) -> str:
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        return urllib.request.url2pathname(parsed.path)
    return os.path.expanduser(url)


def _url_file_name(url: str) -> str:
    return os.path.basename(urllib.parse.urlparse(url).path) if _is_remote(url) else \
        os.path.basename(_local_path(url))


def _join_url(base: str, name: str) -> str:
    if _is_remote(base) or base.startswith("file:"):
        return base.rstrip("/") + "/" + urllib.parse.quote(name)
    return os.path.join(base, name)


def _fetch_source(preset: Preset, index: int, source: Dict, entry: str,
                  log: Callable[[str], None], progress: bool) -> Tuple[str, Dict]:
    """(the folder holding the source's checkpoint, what it came from: url(s) and sha256s)."""
    kind = source["kind"]
    if kind == "python_package":
        spec = importlib.util.find_spec(source["package"])
        if spec is None or not spec.origin:
            raise SourceUnavailable(f"Python package {source.get('pip', source['package'])} is "
                                    f"not installed (pip install --no-deps "
                                    f"{source.get('pip', source['package'])})")
        folder = os.path.join(os.path.dirname(os.path.realpath(spec.origin)),
                              source.get("path", ""))
        log(f"preset {preset.name}: using the installed package "
            f"{source.get('pip', source['package'])} at {folder}")
        return folder, {"package": source.get("pip", source["package"]), "folder": folder,
                        "sha256": {n: _sha256(os.path.join(folder, n))
                                   for n in sorted(os.listdir(folder))
                                   if os.path.isfile(os.path.join(folder, n))}}
    downloads = os.path.join(entry, "downloads", str(index))
    if kind == "archive":
        url = source["url"]
        archive = os.path.join(downloads, _url_file_name(url))
        digest = download(url, archive, source.get("size"), source.get("sha256"),
                          preset.name, log, progress)
        unpacked = os.path.join(entry, "unpacked")
        unpack_archive(archive, unpacked, f"preset {preset.name}")
        folder = find_checkpoint_folder(unpacked, source["format"], archive)
        return folder, {"url": url, "sha256": {os.path.basename(archive): digest}}
    digests, urls = {}, []
    for spec in source["files"]:
        names = _file_names(spec)
        for choice, file_name in enumerate(names):
            url = _join_url(source["base_url"], file_name)
            try:
                digests[file_name] = download(
                    url, os.path.join(downloads, file_name),
                    spec.get("size") if len(names) == 1 else None,
                    spec.get("sha256") if len(names) == 1 else None, preset.name, log, progress)
                urls.append(url)
                break
            except NotOnSource:
                if choice == len(names) - 1:
                    raise
    if "pytorch_model.bin" in digests:
        safetensors_from_torch_bin(downloads, f"preset {preset.name}")
    return downloads, {"url": urls, "sha256": digests}


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(path: str, url: str, size: Optional[int], sha256: Optional[str], name: str) -> str:
    """The file's sha256, after checking it against the registry's size and sha256 (when
    given); on a mismatch the file is deleted and ChecksumMismatch names both values."""
    actual_size = os.path.getsize(path)
    digest = _sha256(path)
    problem = None
    if size is not None and actual_size != size:
        problem = f"{actual_size} bytes, the registry expects {size}"
    elif sha256 is not None and digest != sha256.lower():
        problem = f"sha256 {digest}, the registry expects {sha256}"
    if problem:
        os.remove(path)
        raise ChecksumMismatch(f"preset {name}: {url} gave {problem}; the file was deleted and "
                               "nothing was cached (a corrupt download or a changed release: "
                               "rerun, or check the registry entry)")
    return digest


def download(url: str, path: str, size: Optional[int] = None, sha256: Optional[str] = None,
             name: str = "", log: Callable[[str], None] = _stderr, progress: bool = True) -> str:
    """Fetches `url` (http(s)://, file:// or a local path) to `path` and returns its sha256.

    Bytes go to `<path>.part`, renamed to `path` only once complete and verified (size and
    sha256 when given). A `.part` left by an earlier attempt is resumed with an HTTP Range
    request; a cut connection is retried (resuming) up to ATTEMPTS times. A file already at
    `path` (an earlier download, or one placed by hand) is verified and used.
    SourceUnavailable when the URL cannot be fetched (its reason, e.g. HTTP 404)."""
    if os.path.isfile(path):
        return _verify(path, path, size, sha256, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    part = path + ".part"
    if _is_remote(url):
        for attempt in range(ATTEMPTS):
            try:
                _http_to_part(url, part, size, name, log, progress)
                break
            except (http.client.IncompleteRead, ConnectionError, socket.timeout) as error:
                have = os.path.getsize(part) if os.path.exists(part) else 0
                if attempt == ATTEMPTS - 1:
                    raise SourceUnavailable(f"{url}: connection cut {ATTEMPTS} times "
                                            f"({type(error).__name__}); rerun to resume from "
                                            f"{have} bytes") from None
                log(f"preset {name}: {url}: connection cut at {have} bytes; resuming")
                time.sleep(min(2 ** attempt, 10) * 0.1)
            except urllib.error.HTTPError as error:
                unavailable = NotOnSource if error.code == 404 else SourceUnavailable
                raise unavailable(f"{url}: HTTP {error.code} {error.reason}") from None
            except (urllib.error.URLError, OSError) as error:
                reason = getattr(error, "reason", error)
                raise SourceUnavailable(f"{url}: {reason}") from None
    else:
        source = _local_path(url)
        if not os.path.isfile(source):
            raise NotOnSource(f"{source} does not exist")
        with open(source, "rb") as src, open(part, "wb") as dst:
            shutil.copyfileobj(src, dst, CHUNK_BYTES)
    digest = _verify(part, url, size, sha256, name)
    os.replace(part, path)
    return digest


def _http_to_part(url: str, part: str, size: Optional[int], name: str,
                  log: Callable[[str], None], progress: bool) -> None:
    start = os.path.getsize(part) if os.path.exists(part) else 0
    if size is not None and start > size:
        start = 0  # longer than the whole file: not a prefix of it
    headers = {"User-Agent": "bert-gpt-tf"}
    if start:
        headers["Range"] = f"bytes={start}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS)
    except urllib.error.HTTPError as error:
        if error.code == 416 and start:  # nothing after `start`: the .part is the whole file
            return
        raise
    with response:
        resumed = start and response.status == 206 and response.headers.get(
            "Content-Range", "").startswith(f"bytes {start}-")
        if start and not resumed:
            start = 0  # the server sent the whole file
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        bar = None
        if progress and total:
            from tfmodels.progress import Progress
            bar = Progress(max(total // SIZE_UNIT, 1), os.path.basename(part[:-5]), unit="kB")
        if resumed:
            log(f"preset {name}: resuming {url} at byte {start}")
        done = start
        with open(part, "ab" if resumed else "wb") as f:
            while True:
                chunk = response.read(CHUNK_BYTES)
                if not chunk:
                    break
                f.write(chunk)
                done += len(chunk)
                if bar:
                    bar.update(done // SIZE_UNIT)
        if total is not None and done < total:
            raise http.client.IncompleteRead(b"", total - done)


# ---- unpacking and conversion ---------------------------------------------------------------

def _outside(member: str) -> bool:
    normalised = os.path.normpath(member.replace("\\", "/"))
    return (os.path.isabs(normalised) or normalised == ".." or normalised.startswith("../")
            or (len(member) > 1 and member[1] == ":"))


def unpack_archive(archive: str, target: str, what: str) -> str:
    """Unpacks a .zip or .tar(.gz/.bz2/.xz) into `target` (replacing it); ValueError, before
    anything is written, for a member outside `target` (absolute, `..`, a link pointing out,
    a device file). A refused archive is deleted."""
    def refuse(member: str, why: str):
        os.remove(archive)
        raise ValueError(f"{what}: {archive}: member {member!r} {why}: archive refused (and "
                         "deleted), nothing unpacked")

    with atomic_directory(target) as temp:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    if _outside(info.filename):
                        refuse(info.filename, "lies outside the target folder")
                    if (info.external_attr >> 16) & 0o170000 == 0o120000:
                        refuse(info.filename, "is a symbolic link")
                zf.extractall(temp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf_archive:
                members = tf_archive.getmembers()
                for member in members:
                    try:  # the stdlib's "data" extraction filter (PEP 706) decides
                        tarfile.data_filter(member, temp)
                    except tarfile.FilterError as error:
                        refuse(member.name, f"is refused ({type(error).__name__}: {error})")
                tf_archive.extractall(temp, members=members, filter="data")
        else:
            os.remove(archive)
            raise ValueError(f"{what}: {archive} is neither a zip nor a tar archive (deleted)")
    return target


def find_checkpoint_folder(root: str, fmt: str, archive: str) -> str:
    """The shallowest folder under `root` holding a `fmt` checkpoint (release zips hold one
    top folder, or the files directly)."""
    from tfmodels.checkpoints.formats import detect_checkpoint_format
    for folder, subfolders, _ in os.walk(root):
        subfolders.sort()
        try:
            if detect_checkpoint_format(folder) == fmt:
                return folder
        except ValueError:
            continue
    raise ValueError(f"{archive} holds no {fmt} checkpoint")


def safetensors_from_torch_bin(folder: str, what: str) -> str:
    """Rewrites folder/pytorch_model.bin as folder/model.safetensors, read with torch's
    weights_only loader (tensors only: no code from the file runs)."""
    try:
        import torch
    except ImportError as error:
        raise SourceUnavailable(f"{folder}/pytorch_model.bin needs torch to be read safely "
                                "(pip install '.[reference]')") from error
    from safetensors.numpy import save_file
    source = os.path.join(folder, "pytorch_model.bin")
    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - anything beyond plain tensors lands here
        raise ValueError(f"{what}: {source} is not a plain tensor dict that torch's "
                         f"weights_only loader accepts ({error})") from None
    tensors = {k: v.detach().cpu().contiguous().numpy().copy() for k, v in state.items()}
    target = os.path.join(folder, "model.safetensors")
    save_file(tensors, target, metadata={"format": "pt"})
    os.remove(source)
    return target


def _config_differences(expected: Dict, cfg) -> List[str]:
    return [f"{k}: {getattr(cfg, k, None)} in the checkpoint, {v} in the registry"
            for k, v in expected.items() if getattr(cfg, k, None) != v]


def _convert(preset: Preset, folder: str, fmt: str, provenance: Dict, entry: str,
             log: Callable[[str], None]) -> str:
    """Converts the checkpoint in `folder` to entry/model (atomically): pretrained.keras, the
    tokenizer files and preset.json."""
    from tfmodels.checkpoints.formats import (bpe_files, load_checkpoint_and_vocab,
                                              wordpiece_vocab_file)
    started = time.perf_counter()
    model, vocab = load_checkpoint_and_vocab(folder, fmt, num_heads=preset.config["num_heads"])
    differences = _config_differences(preset.config, model.config)
    if differences:
        raise ValueError(f"preset {preset.name}: {folder} is not the registry's model: "
                         + "; ".join(differences))
    if preset.architecture == "bert":
        tokenizer_files = [vocab or wordpiece_vocab_file(folder)]
    else:
        tokenizer_files = list(bpe_files(folder).values())
    model_dir = os.path.join(entry, "model")
    with atomic_directory(model_dir) as temp:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o777 & ~umask)  # mkdtemp's 0700 would hide a shared cache
        model.save(os.path.join(temp, "pretrained.keras"))
        for path in tokenizer_files:
            shutil.copyfile(path, os.path.join(temp, os.path.basename(path)))
        stamp = {"name": preset.name, "key": preset.key, "format": fmt,
                 "model": type(model).__name__, "lower_case": preset.lower_case,
                 "config": preset.config, "license": preset.license,
                 "source": provenance,
                 "converted": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        atomic_write_text(os.path.join(temp, "preset.json"), json.dumps(stamp, indent=2) + "\n")
    log(f"preset {preset.name}: converted {fmt} {folder} to {model_dir}/pretrained.keras in "
        f"{time.perf_counter() - started:.1f}s")
    return model_dir


# ---- `preset:NAME` and the table ------------------------------------------------------------

def resolve_checkpoint(path: str) -> str:
    """`preset:NAME` -> the preset's cached model folder (fetched on first use); any other
    checkpoint path unchanged."""
    if isinstance(path, str) and path.startswith(PRESET_PREFIX):
        return resolve_preset(path[len(PRESET_PREFIX):])
    return path


def _folder_bytes(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder)
               for f in files)


def _megabytes(size: int) -> str:
    return f"{size / 1e6:,.0f} MB" if size >= 1e6 else f"{size / 1e6:.1f} MB"


def preset_rows(registry: Optional[Dict[str, Preset]] = None,
                cache_dir: Optional[str] = None) -> List[Dict]:
    """One row per preset: name, architecture, parameters, size, licence, cached folder or ""
    (size: on disk when cached, else the float32 weights, marked ~)."""
    registry = load_registry() if registry is None else registry
    rows = []
    for preset in registry.values():
        cached = cached_model_dir(preset, cache_dir) or ""
        size = (_megabytes(_folder_bytes(cached)) if cached
                else "~" + _megabytes(4 * preset.parameters))
        rows.append({"name": preset.name, "architecture": preset.architecture,
                     "parameters": preset.parameters, "size": size, "license": preset.license,
                     "cased": not preset.lower_case, "cached": cached,
                     "description": preset.description})
    return rows


def format_table(rows: List[Dict]) -> str:
    header = ("name", "model", "parameters", "size", "licence", "cached")
    lines = [(r["name"], r["architecture"], f"{r['parameters']:,}", r["size"], r["license"],
              "yes" if r["cached"] else "no") for r in rows]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines)]
    numeric = {2, 3}
    fmt = lambda row: "  ".join(str(v).rjust(w) if i in numeric else str(v).ljust(w)
                                for i, (v, w) in enumerate(zip(row, widths))).rstrip()
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in lines])
