"""Lists the pretrained presets (the checkpoints the BERT and GPT-1 authors released), and
fetches them.

  bert-gpt-presets                              # the table: name, parameters, size, licence,
                                                # cached or not
  bert-gpt-presets --json                       # the same rows as JSON lines (with descriptions)
  bert-gpt-presets --fetch=bert_uncased_L-2_H-128_A-2,openai_gpt
                                                # download, verify, convert, cache; prints each
                                                # preset's folder (what preset:NAME resolves to)

Any checkpoint flag takes `preset:NAME` (`bert-gpt-finetune --init_checkpoint=preset:NAME`),
and the Python API classes and the model classes have `from_preset(NAME)`. The registry is
tfmodels/presets.json plus the files in $BERT_GPT_TF_PRESETS; the cache is
$BERT_GPT_TF_HOME/presets (else ~/.cache/bert_gpt_tf/presets); see tfmodels/presets.py.
"""
import json

from absl import flags

from tfmodels.cli import run_binary
from tfmodels.presets import format_table, preset_rows, resolve_preset

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_list("fetch", [], "Presets to download, verify, convert and cache; prints "
                      "the folder of each.")
    flags.DEFINE_bool("json", False, "Print the table's rows as JSON lines.")


def main(argv):
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {argv[1:]}: pass --fetch=NAME to fetch a preset")
    for name in FLAGS.fetch:
        print(resolve_preset(name), flush=True)
    if FLAGS.fetch:
        return
    rows = preset_rows()
    if FLAGS.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print(format_table(rows))


def run():
    run_binary(main, define_flags)


if __name__ == "__main__":
    run()
