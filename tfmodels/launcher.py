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


# The callables setup.cfg names: bert-gpt-main-job -> main_job, ... (one per table row, so a
# new console script needs only its row here and its line in setup.cfg).
ENTRY_POINTS = {script[len("bert-gpt-"):].replace("-", "_"): _entry_point(script)
                for script in CONSOLE_SCRIPTS}
globals().update(ENTRY_POINTS)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in CONSOLE_SCRIPTS:
        sys.exit(f"usage: python -m tfmodels.launcher <{'|'.join(CONSOLE_SCRIPTS)}> [flags]")
    script = sys.argv.pop(1)
    sys.argv[0] = script
    launch(script)
