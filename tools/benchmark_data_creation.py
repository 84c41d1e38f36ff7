r"""Pretraining-data creation speed and memory, against the TF1 reference script's figure.

  python -m tools.benchmark_data_creation --repeats=10
  python -m tools.benchmark_data_creation --memory_check      # repeats 5, 20 and 40
  python -m tools.benchmark_data_creation --corpus=wikipedia20m --vocab_file=V    # 20M words
  python -m tools.benchmark_data_creation --corpus=wikipedia20m --mode=gpt \
      --bpe_encoder_file=E --bpe_merges_file=M

--corpus=wikipedia20m times the 36 files of ../shared/data/corpus/wikipedia20m as they are
(no repeats), in either mode, with the vocabulary given (the ablations learn theirs from the
same text); BERT defaults to the uncased vocabulary, GPT needs its BPE files.

Input: WikiText-2 validation (../shared/data/corpus) turned into the google-research/bert
format (articles are documents, sentences split at ' . ', one per line) and repeated N times.
Flags as the reference measurement: max_seq_length 128, max_predictions_per_seq 20,
masked_lm_prob 0.15, dupe_factor 5, the uncased BERT vocabulary. Reference: the TF1
`create_pretraining_data.py` made 132,609 instances in 82 s (1,650 instances/s) at 1.06 GB
peak memory on 2 cores for 10 repeats.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

from absl import flags

from pretraining.corpora import wikitext_documents, write_documents
from tfmodels.architectures import INPUT_FORMATS
from tfmodels.cli import run_binary

FLAGS = flags.FLAGS


def define_flags():
    """The binary's flags, defined when it runs (tfmodels.cli.run_binary), not on import."""
    flags.DEFINE_string("shared_data", "../shared/data", "Folder of the real third-party data.")
    flags.DEFINE_integer("repeats", 10, "How many copies of WikiText-2 valid to concatenate.")
    flags.DEFINE_integer("num_workers", 2, "Worker processes.")
    flags.DEFINE_bool("memory_check", False, "Run repeats 5, 20 and 40 to show memory stays flat.")
    flags.DEFINE_bool("whole_word_mask", False, "Whole-word masking.")
    flags.DEFINE_enum("corpus", "wikitext2", ["wikitext2", "wikipedia20m"],
                      "wikitext2: WikiText-2 valid x --repeats; wikipedia20m: the 20M-word corpus.")
    flags.DEFINE_enum("mode", "bert", list(INPUT_FORMATS), "Records to make.")
    flags.DEFINE_string("vocab_file", "", "BERT WordPiece vocabulary (default: the uncased one).")
    flags.DEFINE_string("bpe_encoder_file", "", "GPT BPE encoder JSON (--mode=gpt).")
    flags.DEFINE_string("bpe_merges_file", "", "GPT BPE merges (--mode=gpt).")
    flags.DEFINE_integer("dupe_factor", 5, "BERT: masked copies of each instance.")


REFERENCE_RATE = 1650.0
REFERENCE_PEAK_MB = 1060.0


def tree_rss_bytes(process) -> int:
    """Resident memory of a process and all its descendants (the creator and its workers)."""
    import psutil
    total = 0
    for p in [process] + process.children(recursive=True):
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_once(repeats: int, workdir: str):
    """Runs the creator in a child process; returns (words, instances, seconds, wall, peak MB).

    Peak memory is the largest sum of resident memory over the creator and its workers,
    sampled every 20 ms. (ru_maxrss would overstate it: Linux carries the parent's high-water
    mark into a spawned child across exec.)
    """
    import psutil
    if FLAGS.corpus == "wikipedia20m":
        import glob
        inputs = sorted(glob.glob(os.path.join(FLAGS.shared_data,
                                               "corpus/wikipedia20m/wiki_*.txt")))
        words = 0
        for path in inputs:
            with open(path, encoding="utf-8") as f:
                words += sum(len(line.split()) for line in f)
    else:
        corpus = os.path.join(workdir, f"wiki_x{repeats}.txt")
        words = write_documents(
            corpus, wikitext_documents(os.path.join(FLAGS.shared_data,
                                                    "corpus/wikitext2-valid.tokens.txt")),
            repeats)
        inputs = [corpus]
    out_dir = os.path.join(workdir, f"records_x{repeats}")
    if FLAGS.mode == "gpt":
        if not (FLAGS.bpe_encoder_file and FLAGS.bpe_merges_file):
            raise ValueError("--mode=gpt needs --bpe_encoder_file and --bpe_merges_file")
        settings = (f"mode='gpt', n_ctx=128, bpe_encoder_file={FLAGS.bpe_encoder_file!r}, "
                    f"bpe_merges_file={FLAGS.bpe_merges_file!r}")
    else:
        vocab = FLAGS.vocab_file or os.path.join(FLAGS.shared_data,
                                                 "bert_vocab/bert-base-uncased-vocab.txt")
        settings = (f"vocab_file={vocab!r}, max_seq_length=128, max_predictions_per_seq=20, "
                    f"masked_lm_prob=0.15, dupe_factor={FLAGS.dupe_factor}, "
                    f"whole_word_mask={FLAGS.whole_word_mask}")
    code = (
        "import json\n"
        "from pretraining.create_data import DataConfig, create_pretraining_data\n"
        f"cfg = DataConfig({settings})\n"
        f"t = create_pretraining_data({inputs!r}, {out_dir!r}, cfg,"
        f" num_workers={FLAGS.num_workers}, log=lambda m: None)\n"
        "print(json.dumps({'instances': t['instances'], 'seconds': t['seconds'],"
        " 'shards': t['shards'], 'tokens': t['tokens']}))\n")
    start = time.time()
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    process, peak = psutil.Process(child.pid), 0
    while child.poll() is None:
        peak = max(peak, tree_rss_bytes(process))
        time.sleep(0.02)
    stdout, stderr = child.communicate()
    wall = time.time() - start
    if child.returncode:
        raise RuntimeError(stderr[-3000:])
    stats = json.loads(stdout.strip().splitlines()[-1])
    return (words, stats["instances"], stats["seconds"], wall, peak / 2 ** 20, stats["shards"],
            stats["tokens"])


def main(argv):
    del argv
    repeats = ([1] if FLAGS.corpus == "wikipedia20m" else
               [5, 20, 40] if FLAGS.memory_check else [FLAGS.repeats])
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for r in repeats:
            rows.append((r,) + run_once(r, workdir))
    print(f"\n{FLAGS.corpus}, mode {FLAGS.mode}, workers {FLAGS.num_workers}, "
          f"whole_word_mask {FLAGS.whole_word_mask}; "
          f"reference (TF1 script, 10 repeats): {REFERENCE_RATE:,.0f} instances/s, "
          f"{REFERENCE_PEAK_MB:,.0f} MB peak\n")
    print("| repeats | words | instances | shards | tokens | seconds (creation) | "
          "seconds (with start-up) | instances/s | vs reference | peak MB (creator + workers) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r, words, instances, seconds, wall, peak, shards, tokens in rows:
        print(f"| {r} | {words:,} | {instances:,} | {shards:,} | {tokens:,} | {seconds:.1f} | "
              f"{wall:.1f} | {instances / seconds:,.0f} | "
              f"{instances / seconds / REFERENCE_RATE:.1f}x | {peak:,.0f} |")


def run():
    run_binary(main, define_flags)


if __name__ == "__main__":
    run()
