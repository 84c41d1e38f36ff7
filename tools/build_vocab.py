r"""Builds a tokenizer vocabulary from a text corpus.

  bert-gpt-build-vocab --kind=wordpiece --input_files=corpus/*.txt --vocab_size=30522 \
      --output=vocab.txt
  bert-gpt-build-vocab --kind=bpe --input_files=corpus/*.txt --num_merges=40000 \
      --output=my_bpe   # writes my_bpe/encoder_bpe.json and my_bpe/vocab.bpe

WordPiece uses tensorflow-text's vocabulary learner (the BERT recipe); BPE learns merges by
pair frequency over the same pre-tokenisation as GPT-1's tokenizer.
"""

import os
from typing import Iterator, List

from absl import flags

from pretraining.corpora import expand_patterns
from tfmodels.cli import run_binary

FLAGS = flags.FLAGS


def define_flags():
    """The binary's flags, defined when it runs (tfmodels.cli.run_binary), not on import."""
    flags.DEFINE_enum("kind", "wordpiece", ["wordpiece", "bpe"], "Vocabulary type.")
    flags.DEFINE_list("input_files", None, "Comma-separated globs of UTF-8 text files.")
    flags.DEFINE_string("output", None, "vocab.txt path (wordpiece) or output folder (bpe).")
    flags.DEFINE_integer("vocab_size", 30522, "WordPiece: target vocabulary size.")
    flags.DEFINE_bool("lower_case", True, "WordPiece: lower case and strip accents (uncased).")
    flags.DEFINE_integer("num_merges", 40000, "BPE: number of merges to learn.")
    flags.DEFINE_integer("min_frequency", 2, "BPE: stop when the best pair is rarer than this.")
    flags.mark_flags_as_required(["input_files", "output"])


def read_lines(files: List[str]) -> Iterator[str]:
    """Non-empty lines of the files, streamed."""
    for path in files:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                line = line.strip()
                if line:
                    yield line


def build_vocab(vocab_type: str, files: List[str], output: str, vocab_size: int = 30522,
                lower_case: bool = True, num_merges: int = 40000,
                min_frequency: int = 2) -> str:
    """Learns a vocabulary from `files` and writes it to `output`; returns what it wrote."""
    if vocab_type == "wordpiece":
        from tfmodels.tokenizers.wordpiece_vocab import learn_wordpiece_vocab, write_vocab_file
        tokens = learn_wordpiece_vocab(read_lines(files), vocab_size, lower_case=lower_case)
        write_vocab_file(tokens, output)
        # The learner gets close to vocab_size, not to it: the model needs the real count.
        print(f"wrote {len(tokens)} WordPiece tokens to {output} (a model on it needs "
              f"--vocab_size={len(tokens)})")
        return output
    from tfmodels.tokenizers.bpe_vocab import learn_bpe_merges, write_bpe_files
    merges, encoder = learn_bpe_merges(read_lines(files), num_merges,
                                       min_frequency=min_frequency)
    os.makedirs(output, exist_ok=True)
    write_bpe_files(merges, encoder, os.path.join(output, "encoder_bpe.json"),
                    os.path.join(output, "vocab.bpe"))
    print(f"wrote {len(merges)} merges and {len(encoder)} symbols to {output} (a GPT-1 model "
          f"on it needs --vocab_size={len(encoder) + 3}: the symbols and GPT-1's 3 added tokens)")
    return output


def main(argv):
    del argv
    build_vocab(FLAGS.kind, expand_patterns(FLAGS.input_files), FLAGS.output,
                vocab_size=FLAGS.vocab_size, lower_case=FLAGS.lower_case,
                num_merges=FLAGS.num_merges, min_frequency=FLAGS.min_frequency)


def run():
    run_binary(main, define_flags)


if __name__ == "__main__":
    run()
