"""Regenerates the parity fixtures under tests/fixtures/ with the reference implementation.

  pip install '.[reference]'     # torch + transformers: only this tool needs them
  python -m tools.make_parity_fixtures --shared_data=../shared/data

Writes
  minilm_reference.npz      8 real sentences (SST-2, MRPC) packed to 40 tokens by MiniLM's
                            tokenizer.json, and transformers' BertModel sequence and pooled
                            outputs for the all-MiniLM-L6-v2 weights (float32)
  tiny_openai_gpt/hf/       a small random OpenAIGPTLMHeadModel (seeded) as safetensors
  tiny_openai_gpt/npy/      the same weights in the original release layout
                            (params_shapes.json + params_0..9.npy)
  tiny_openai_gpt/reference.npz   its input ids and transformers' logits
Tests compare our converted models against these without importing torch.
"""
import csv
import json
import os
import pathlib

import numpy as np
from absl import flags

from tfmodels.cli import run_binary

FLAGS = flags.FLAGS


def define_flags():
    """The binary's flags, defined when it runs (tfmodels.cli.run_binary), not on import."""
    flags.DEFINE_string("shared_data", "../shared/data", "Folder of the real third-party data.")
    flags.DEFINE_string("output_dir", "tests/fixtures", "Where fixtures are written.")


SEQ_LENGTH = 40
GPT_CONFIG = dict(vocab_size=200, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                  afn="gelu", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


def real_sentences(shared: pathlib.Path):
    with open(shared / "glue/SST-2/train.tsv", encoding="utf-8") as f:
        sst = [row[0] for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)][1:5]
    with open(shared / "glue/MRPC/train.tsv", encoding="utf-8-sig") as f:
        mrpc = [(row[3], row[4]) for row in csv.reader(f, delimiter="\t",
                                                       quoting=csv.QUOTE_NONE)][1:5]
    return [(s, None) for s in sst] + mrpc


def make_minilm_fixture(shared: pathlib.Path, out: pathlib.Path) -> None:
    import torch
    import transformers
    from tokenizers import Tokenizer

    from tfmodels.checkpoints.hf_bert import minilm_folder
    folder = pathlib.Path(minilm_folder())
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(SEQ_LENGTH, strategy="longest_first")
    tokenizer.enable_padding(length=SEQ_LENGTH)
    encodings = [tokenizer.encode(a, b) if b else tokenizer.encode(a)
                 for a, b in real_sentences(shared)]
    input_ids = np.array([e.ids for e in encodings], np.int32)
    segment_ids = np.array([e.type_ids for e in encodings], np.int32)
    input_mask = np.array([e.attention_mask for e in encodings], np.int32)
    model = transformers.BertModel.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        result = model(input_ids=torch.tensor(input_ids, dtype=torch.long),
                       token_type_ids=torch.tensor(segment_ids, dtype=torch.long),
                       attention_mask=torch.tensor(input_mask, dtype=torch.long))
    np.savez_compressed(out / "minilm_reference.npz", input_ids=input_ids,
                        segment_ids=segment_ids, input_mask=input_mask,
                        sequence_output=result.last_hidden_state.numpy().astype(np.float32),
                        pooled_output=result.pooler_output.numpy().astype(np.float32),
                        transformers_version=np.array(transformers.__version__))


def write_openai_release(state, n_layer: int, folder: pathlib.Path) -> None:
    """The original release layout: shapes list + the flat parameters cut into 10 shards."""
    params = [state["positions_embed.weight"], state["tokens_embed.weight"]]
    for i in range(n_layer):
        for name in ("attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
                     "attn.c_proj.bias", "ln_1.weight", "ln_1.bias", "mlp.c_fc.weight",
                     "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias", "ln_2.weight",
                     "ln_2.bias"):
            value = state[f"h.{i}.{name}"]
            # The original stores conv1d kernels with a leading 1: [1, in, out].
            params.append(value[None] if value.ndim == 2 else value)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "params_shapes.json", "w") as f:
        json.dump([list(p.shape) for p in params], f)
    flat = np.concatenate([p.reshape(-1) for p in params]).astype(np.float32)
    for n, shard in enumerate(np.array_split(flat, 10)):
        np.save(folder / f"params_{n}.npy", shard)


def make_gpt_fixture(out: pathlib.Path) -> None:
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.OpenAIGPTConfig(**GPT_CONFIG)
    model = transformers.OpenAIGPTLMHeadModel(config).eval()
    folder = out / "tiny_openai_gpt"
    model.save_pretrained(str(folder / "hf"), safe_serialization=True)
    state = {k: v.numpy() for k, v in model.transformer.state_dict().items()}
    write_openai_release(state, config.n_layer, folder / "npy")
    rng = np.random.default_rng(0)
    input_ids = rng.integers(0, config.vocab_size, (3, 16)).astype(np.int32)
    with torch.no_grad():
        logits = model(torch.tensor(input_ids, dtype=torch.long)).logits.numpy()
    np.savez_compressed(folder / "reference.npz", input_ids=input_ids,
                        logits=logits.astype(np.float32))


def main(argv):
    del argv
    out = pathlib.Path(FLAGS.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    make_minilm_fixture(pathlib.Path(FLAGS.shared_data), out)
    make_gpt_fixture(out)
    for path in sorted(out.rglob("*")):
        if path.is_file():
            print(f"{path}  {os.path.getsize(path):,} bytes")


def run():
    run_binary(main, define_flags)


if __name__ == "__main__":
    run()
