"""Where every console script starts: TensorFlow's start-up lines are filtered
(`tfmodels.quiet_logs.quiet_start_up`) BEFORE the binary's module, which imports TensorFlow,
is imported. `setup.cfg` points each `bert-gpt-*` script at one of the callables below.

    python -m tfmodels.launcher bert-gpt-finetune --help    # the same, from a checkout
"""
from __future__ import annotations

import importlib
import sys
from typing import Callable, Dict

from tfmodels.quiet_logs import quiet_start_up

# Console script -> the module whose `run()` it calls.
CONSOLE_SCRIPTS: Dict[str, str] = {
    "bert-gpt-main-job": "tools.main_job",
    "bert-gpt-build-vocab": "tools.build_vocab",
    "bert-gpt-convert": "tools.convert_checkpoint",
    "bert-gpt-create-pretraining-data": "pretraining.create_pretraining_data",
    "bert-gpt-pretrain": "pretraining.run_pretraining",
    "bert-gpt-finetune": "finetune.run_finetune",
    "bert-gpt-export": "tools.export_model",
    "bert-gpt-predict": "tools.predict",
    "bert-gpt-presets": "tools.presets",
    "bert-gpt-data-coverage": "tools.data_coverage",
}
# "bert_gpt_tf." when installed (this module is bert_gpt_tf.tfmodels.launcher), "" in a checkout.
_PACKAGE = __name__[:-len("tfmodels.launcher")]


def launch(script: str) -> None:
    quiet_start_up(sys.argv)
    importlib.import_module(_PACKAGE + CONSOLE_SCRIPTS[script]).run()


def _entry_point(script: str) -> Callable[[], None]:
    def entry_point() -> None:
        launch(script)
    entry_point.__name__ = script.replace("-", "_")
    return entry_point


main_job = _entry_point("bert-gpt-main-job")
build_vocab = _entry_point("bert-gpt-build-vocab")
convert = _entry_point("bert-gpt-convert")
create_pretraining_data = _entry_point("bert-gpt-create-pretraining-data")
pretrain = _entry_point("bert-gpt-pretrain")
finetune = _entry_point("bert-gpt-finetune")
export = _entry_point("bert-gpt-export")
predict = _entry_point("bert-gpt-predict")
presets = _entry_point("bert-gpt-presets")
data_coverage = _entry_point("bert-gpt-data-coverage")

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in CONSOLE_SCRIPTS:
        sys.exit(f"usage: python -m tfmodels.launcher <{'|'.join(CONSOLE_SCRIPTS)}> [flags]")
    script = sys.argv.pop(1)
    sys.argv[0] = script
    launch(script)
