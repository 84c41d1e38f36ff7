"""How every binary of the project reports an expected error: one line on stderr, exit code 2.

`run_binary(main, define_flags)` replaces `absl.app.run(main)` and defines the binary's flags
when it runs, never on import. Bad flags, files, configs and data are the user's to fix, so for
them a traceback is noise: the binary prints

    bert-gpt-pretrain: error: <what went wrong, naming the file / flag / record>

and exits with status 2 (the status argparse and absl give a usage error). Anything else (a
bug) keeps its traceback. `--verbose_errors` (or absl's `--verbosity=1` and up) prints the
traceback of expected errors too.

Expected errors: ValueError (our validation; UnicodeDecodeError is one), OSError (missing,
unreadable files: FileNotFoundError, IsADirectoryError, PermissionError), absl flag errors
and `app.UsageError`,
and TensorFlow's data and file errors (NotFoundError, DataLossError, InvalidArgumentError,
FailedPreconditionError, ...), whose messages lose their op decorations here.
"""
from __future__ import annotations

import os
import re
import sys
import traceback
from typing import Callable, Dict, List, Optional

from absl import app, flags, logging

from tfmodels.quiet_logs import quiet_start_up

FLAGS = flags.FLAGS
USAGE_ERROR_EXIT_CODE = 2


def _program_name() -> str:
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"


def _tensorflow_error_types() -> tuple:
    """TensorFlow's OpError, only if TensorFlow is already imported (never import it here:
    some binaries and their workers run without it)."""
    tf_errors = sys.modules.get("tensorflow.python.framework.errors_impl")
    return (tf_errors.OpError,) if tf_errors is not None else ()


def is_expected_error(error: BaseException) -> bool:
    return isinstance(error, (ValueError, OSError, flags.Error, app.UsageError)
                      + _tensorflow_error_types())


def one_line_message(error: BaseException) -> str:
    """The error's message on one line; TensorFlow's op decorations
    ({{function_node ...}}, [[{{node ...}}]], [Op:...]) removed."""
    tf_types = _tensorflow_error_types()
    text = error.message if tf_types and isinstance(error, tf_types) else str(error)
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)
    text = re.sub(r"\s*\[\[\{\{node [^]]*\]\]", "", text)
    text = re.sub(r"\s*\[Op:[^\]]*\]", "", text)
    return " ".join(text.split()) or type(error).__name__


def define_common_flags() -> None:
    """The flags every binary has (`--verbose_errors`); defined once, when a binary runs."""
    if "verbose_errors" not in FLAGS:
        flags.DEFINE_bool("verbose_errors", False,
                          "Print the full traceback of expected errors (bad flags, files, data).")


def _show_traceback() -> bool:
    try:
        return bool(FLAGS.verbose_errors) or logging.get_verbosity() >= logging.DEBUG
    except (flags.UnparsedFlagAccessError, AttributeError):  # not parsed, or not defined
        return "--verbose_errors" in sys.argv


def report_and_exit(error: BaseException) -> None:
    """Prints `error` as one line (with its traceback if asked) and exits with status 2."""
    if _show_traceback():
        traceback.print_exception(type(error), error, error.__traceback__)
    sys.stderr.write(f"{_program_name()}: error: {one_line_message(error)}\n")
    sys.stderr.flush()
    sys.exit(USAGE_ERROR_EXIT_CODE)


def _parse_flags(argv: List[str]) -> List[str]:
    try:
        return FLAGS(argv)
    except flags.Error as error:
        report_and_exit(error)
        raise  # unreachable: report_and_exit exits


def guarded(main: Callable) -> Callable:
    """`main` with expected errors turned into one line on stderr and exit code 2."""
    def guarded_main(argv):
        try:
            return main(argv)
        except Exception as error:  # noqa: BLE001 - sorted below
            if not is_expected_error(error):
                raise
            report_and_exit(error)
    guarded_main.__name__ = getattr(main, "__name__", "main")
    guarded_main.__doc__ = main.__doc__
    return guarded_main


HELP_ARGUMENTS = ("--help", "-help", "-h", "-?", "--helpshort")


def _help_requested(argv: List[str]) -> bool:
    arguments = argv[1:argv.index("--")] if "--" in argv else argv[1:]
    return any(a in HELP_ARGUMENTS for a in arguments)


def run_binary(main: Callable, define_flags: Optional[Callable[[], None]] = None,
               argv: Optional[List[str]] = None,
               flag_groups: Optional[Dict[str, str]] = None) -> None:
    """`absl.app.run(main)` with the project's error reporting (module docstring).

    define_flags: defines the binary's flags. Called here, when the binary runs, so that
    importing a binary's module (tests, other tools, the ablation workspace) defines none.
    `--help` prints the binary's own flags by group (tfmodels.flag_help; flag_groups overrides
    the project-wide group of a flag that means something else here) and exits 0."""
    argv = list(sys.argv if argv is None else argv)
    quiet_start_up(argv)
    before = set(FLAGS)
    define_common_flags()
    if define_flags is not None:
        define_flags()
    if _help_requested(argv):
        from tfmodels.flag_help import format_help
        # Defined by define_flags and by our code: a module it imports first (TensorFlow's
        # TPU flags, absl's) defines flags too, which are not the binary's.
        ours = ("tfmodels", "finetune", "pretraining", "tools", "bert_gpt_tf", "__main__")
        own = [name for name, flag in FLAGS._flags().items()  # noqa: SLF001 (definition order)
               if name not in before and name == flag.name
               and (FLAGS.find_module_defining_flag(name) or "").split(".")[0] in ours]
        doc = sys.modules[main.__module__].__doc__ if main.__module__ in sys.modules else ""
        sys.stdout.write(format_help(doc or "", own, FLAGS, flag_groups))
        sys.stdout.flush()
        sys.exit(0)
    app.run(guarded(main), argv=argv, flags_parser=_parse_flags)
