"""CoNLL-2003 NER (`word POS chunk NER` per line) -> TokenExample, one per sentence.

Sentences are separated by blank lines; `-DOCSTART-` lines mark documents and are skipped.
The file's tags are IOB1; `to_iob2=True` rewrites them so every entity starts with B-.
"""
from __future__ import annotations

import os
from typing import Collection, List, Optional

from finetune.examples import TokenExample
from finetune.metrics import iob1_to_iob2
from finetune.readers.common import DataError

CONLL2003_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")


def read_conll(path: str, num_columns: Optional[int] = 4,
               tag_set: Optional[Collection[str]] = CONLL2003_TAGS,
               to_iob2: bool = False) -> List[TokenExample]:
    """Read a CoNLL-format file: the word is the first field and the tag the last.

    guid = `<file name>:<line of the sentence's first word>`. Raises DataError naming file and
    line for a wrong field count, a tag outside `tag_set`, or a file without sentences.
    """
    name = os.path.basename(path)
    examples: List[TokenExample] = []
    words: List[str] = []
    tags: List[str] = []
    first_line = 0

    def flush() -> None:
        if words:
            out = iob1_to_iob2(tags) if to_iob2 else list(tags)
            examples.append(TokenExample(guid=f"{name}:{first_line}", words=tuple(words), tags=tuple(out)))
            words.clear()
            tags.clear()

    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            fields = line.split()
            if not fields or fields[0] == "-DOCSTART-":
                flush()
                continue
            if (num_columns is not None and len(fields) != num_columns) or len(fields) < 2:
                raise DataError(path, f"line {line_no}",
                                f"expected {num_columns or 'at least 2'} space-separated fields, found {len(fields)}")
            tag = fields[-1]
            if tag_set is not None and tag not in tag_set:
                raise DataError(path, f"line {line_no}", f"unknown tag {tag!r}; expected one of {sorted(tag_set)}")
            if not words:
                first_line = line_no
            words.append(fields[0])
            tags.append(tag)
    flush()
    if not examples:
        raise DataError(path, None, "no sentences in the file")
    return examples
