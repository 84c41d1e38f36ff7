"""Multiple-choice readers: SWAG (CSV), RACE (a folder of per-article JSON), Story Cloze (CSV).

All return ChoiceExample with `label` the index of the right ending (None where a test file
has no answers). Columns are found by header name; errors name file and line (or JSON field).
"""
from __future__ import annotations

import json
import os
from typing import List, Optional, Sequence

from finetune.examples import ChoiceExample
from finetune.readers.common import DataError, header_index, read_delimited

SWAG_ENDINGS = ("ending0", "ending1", "ending2", "ending3")
STORY_CLOZE_SENTENCES = ("InputSentence1", "InputSentence2", "InputSentence3", "InputSentence4")
STORY_CLOZE_ENDINGS = ("RandomFifthSentenceQuiz1", "RandomFifthSentenceQuiz2")


def _read_choice_csv(path: str, text_cols: Sequence[str], label_col: str, guid_col: Optional[str],
                     label_values: Sequence[str], require_label: bool, build) -> List[ChoiceExample]:
    """Shared CSV walk: header lookup, field-count and label checks; `build(row, cols)` -> fields."""
    rows = read_delimited(path, ",")
    _, header = next(rows)
    required = list(text_cols) + ([label_col] if require_label else [])
    cols = header_index(path, header, list(text_cols) + [label_col, guid_col], required)
    name = os.path.basename(path)
    examples = []
    for line, row in rows:
        where = f"line {line}"
        if len(row) != len(header):
            raise DataError(path, where, f"expected {len(header)} comma-separated fields, found {len(row)}")
        label = None
        if cols[label_col] is not None:
            raw = row[cols[label_col]].strip()
            if raw not in label_values:
                raise DataError(path, where, f"unknown label {raw!r}; expected one of {list(label_values)}")
            label = list(label_values).index(raw)
        guid = row[cols[guid_col]] if cols.get(guid_col) is not None else f"{name}:{line}"
        context, question, endings = build(row, cols)
        examples.append(ChoiceExample(guid=guid, context=context, question=question,
                                      endings=tuple(endings), label=label))
    if not examples:
        raise DataError(path, None, "no examples after the header")
    return examples


def read_swag(path: str, require_label: bool = True) -> List[ChoiceExample]:
    """SWAG 'regular' CSV: context = sent1, question = sent2 (the ending's start), 4 endings."""
    def build(row, cols):
        return row[cols["sent1"]], row[cols["sent2"]], [row[cols[e]] for e in SWAG_ENDINGS]

    return _read_choice_csv(path, ("sent1", "sent2") + SWAG_ENDINGS, "label", None,
                            ("0", "1", "2", "3"), require_label, build)


def read_story_cloze(path: str, require_label: bool = True) -> List[ChoiceExample]:
    """Story Cloze CSV: context = the 4 story sentences joined by spaces; 2 candidate endings."""
    def build(row, cols):
        context = " ".join(row[cols[c]].strip() for c in STORY_CLOZE_SENTENCES)
        return context, "", [row[cols[e]] for e in STORY_CLOZE_ENDINGS]

    return _read_choice_csv(path, STORY_CLOZE_SENTENCES + STORY_CLOZE_ENDINGS, "AnswerRightEnding",
                            "InputStoryid", ("1", "2"), require_label, build)


RACE_LETTERS = "ABCD"


def _race_article(path: str, require_label: bool) -> List[ChoiceExample]:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(path, f"line {e.lineno} column {e.colno}", f"invalid JSON ({e.msg})") from None
    if not isinstance(doc, dict):
        raise DataError(path, "$", "expected a JSON object")
    for key in ("article", "questions", "options"):
        if key not in doc:
            raise DataError(path, "$", f"missing field {key!r}")
    questions, options = doc["questions"], doc["options"]
    answers = doc.get("answers")
    if answers is None and require_label:
        raise DataError(path, "$", "missing field 'answers'")
    if len(options) != len(questions) or (answers is not None and len(answers) != len(questions)):
        raise DataError(path, "$", f"{len(questions)} questions but {len(options)} option lists and "
                        f"{len(answers) if answers is not None else 'no'} answers")
    article_id = str(doc.get("id", os.path.basename(path)))
    examples = []
    for i, (question, opts) in enumerate(zip(questions, options)):
        if not isinstance(opts, list) or len(opts) != len(RACE_LETTERS):
            raise DataError(path, f"options[{i}]", f"expected {len(RACE_LETTERS)} options")
        label = None
        if answers is not None:
            if answers[i] not in tuple(RACE_LETTERS):
                raise DataError(path, f"answers[{i}]", f"unknown answer {answers[i]!r}; expected A-D")
            label = RACE_LETTERS.index(answers[i])
        examples.append(ChoiceExample(guid=f"{article_id}-{i}", context=doc["article"],
                                      question=question, endings=tuple(opts), label=label))
    return examples


def read_race(directory: str, require_label: bool = True) -> List[ChoiceExample]:
    """Every per-article JSON file under `directory` (recursively, in sorted path order), one
    ChoiceExample per question; guid = `<article id>-<question index>`."""
    if os.path.isfile(directory):
        paths = [directory]
    else:
        paths = sorted(os.path.join(root, f) for root, _, files in os.walk(directory)
                       for f in files if not f.startswith("."))
    if not paths:
        raise DataError(directory, None, "no RACE article files")
    examples = []
    for path in paths:
        examples.extend(_race_article(path, require_label))
    if not examples:
        raise DataError(directory, None, "no questions in any article")
    return examples
