"""Rebuilds tools/demo_data/sst2_sample.tsv from the GLUE SST-2 training file (provenance: README).

  python -m tools.demo_data.make_sst2_sample --sst2_train=../shared/data/glue/SST-2/train.tsv

Keeps the training rows of at least MIN_WORDS words (SST-2's train file is mostly short
sub-phrases of parsed sentences; longer rows read like the sentences users send), draws
SAMPLE of them with a fixed seed, and writes the first TRAIN_ROWS as the training part. The rest
is the held-back part, minus every row that contains, or is contained in, a training row:
SST-2 phrases are sub-trees of the same sentences, and such a row would be partly seen.
The main job never reads ../shared; this script is how the shipped file was made.
"""
from __future__ import annotations

import argparse
import pathlib

import numpy as np

MIN_WORDS = 8
SAMPLE = 4700
TRAIN_ROWS = 3000
SEED = 20131018  # EMNLP 2013, SST's paper
OUTPUT = pathlib.Path(__file__).resolve().parent / "sst2_sample.tsv"


def sample_rows(rows):
    """[(sentence, label)] -> (training rows, held-back rows)."""
    long_rows = [r for r in rows if len(r[0].split()) >= MIN_WORDS]
    picked = np.random.default_rng(SEED).choice(len(long_rows), SAMPLE, replace=False)
    chosen = [long_rows[i] for i in picked]
    train, rest = chosen[:TRAIN_ROWS], chosen[TRAIN_ROWS:]
    seen = [t for t, _ in train]
    held = [(t, y) for t, y in rest if not any(t in s or s in t for s in seen)]
    return train, held


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sst2_train", default="../shared/data/glue/SST-2/train.tsv")
    args = parser.parse_args()
    lines = pathlib.Path(args.sst2_train).read_text(encoding="utf-8").splitlines()
    rows = [tuple(line.rsplit("\t", 1)) for line in lines[1:] if line.strip()]
    rows = [(text.strip(), label.strip()) for text, label in rows]
    train, held = sample_rows(rows)
    OUTPUT.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in train + held),
                      encoding="utf-8")
    print(f"{OUTPUT}: {len(train)} training rows (lines 2-{len(train) + 1}), {len(held)} "
          f"held-back rows (lines {len(train) + 2}-{len(train) + len(held) + 1}) of "
          f"{len(rows)} in {args.sst2_train}")


if __name__ == "__main__":
    main()
