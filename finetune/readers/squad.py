"""SQuAD v1.1 / v2.0 JSON (official schema) -> SpanExample, with every answer span verified.

Schema: `{"data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question",
"answers": [{"text", "answer_start"}], "is_impossible"?}]}]}]}`. A wrong `answer_start`
silently trains the span head on the wrong tokens, so each answer must satisfy
`context[start:start + len(text)] == text`; errors name the JSON path and question id.
"""
from __future__ import annotations

import json
from typing import Any, List, Tuple, Union

from finetune.examples import SpanExample
from finetune.readers.common import DataError


def _get(path: str, where: str, obj: Any, key: str, typ: Union[type, Tuple[type, ...]]) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise DataError(path, where, f"missing field {key!r}")
    value = obj[key]
    if not isinstance(value, typ) or isinstance(value, bool):
        names = "/".join(t.__name__ for t in (typ if isinstance(typ, tuple) else (typ,)))
        raise DataError(path, f"{where}.{key}", f"expected {names}, got {type(value).__name__}")
    return value


def read_squad(path: str, require_answers: bool = True) -> List[SpanExample]:
    """Read a SQuAD v1.1 or v2.0 file; v2.0 questions carry `is_impossible`.

    `require_answers=False` accepts answerable questions without answers (unlabelled input).
    Raises DataError for invalid JSON, a missing field, a span that does not match the context,
    an impossible question with answers, a duplicate id, or a file with no questions.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if not text.strip():
            raise DataError(path, None, "file is empty")
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(path, f"line {e.lineno} column {e.colno}", f"invalid JSON ({e.msg})") from None

    examples: List[SpanExample] = []
    seen = set()
    for ai, article in enumerate(_get(path, "$", doc, "data", list)):
        for pi, para in enumerate(_get(path, f"data[{ai}]", article, "paragraphs", list)):
            pwhere = f"data[{ai}].paragraphs[{pi}]"
            context = _get(path, pwhere, para, "context", str)
            for qi, qa in enumerate(_get(path, pwhere, para, "qas", list)):
                qwhere = f"{pwhere}.qas[{qi}]"
                qid = str(_get(path, qwhere, qa, "id", (str, int)))
                qwhere = f"{qwhere} (id {qid})"
                if qid in seen:
                    raise DataError(path, qwhere, "duplicate question id")
                seen.add(qid)
                question = _get(path, qwhere, qa, "question", str)
                impossible = bool(qa.get("is_impossible", False))
                answers = []
                for ni, ans in enumerate(qa.get("answers", [])):
                    awhere = f"{qwhere}.answers[{ni}]"
                    ans_text = _get(path, awhere, ans, "text", str)
                    start = _get(path, awhere, ans, "answer_start", int)
                    found = context[start:start + len(ans_text)]
                    if start < 0 or found != ans_text:
                        raise DataError(path, awhere, f"answer {ans_text!r} is not at context offset "
                                        f"{start} (context there reads {found!r})")
                    answers.append((ans_text, start))
                if impossible and answers:
                    raise DataError(path, qwhere, "is_impossible is true but the question has answers")
                if not impossible and not answers and require_answers:
                    raise DataError(path, qwhere, "answerable question without answers")
                examples.append(SpanExample(qid=qid, question=question, context=context,
                                            answers=tuple(answers), is_impossible=impossible,
                                            article=ai))
    if not examples:
        raise DataError(path, None, "no questions in the file")
    return examples
