"""Turns public corpora into the pretraining text format (one sentence per line, a blank line
between documents), for benchmarks, tests and the report tools."""
import glob
import re
from typing import List, Sequence


def expand_patterns(patterns: Sequence[str]) -> List[str]:
    """Files matching the globs, sorted per glob; a glob that matches nothing is an error."""
    files = []
    for pattern in patterns:
        matched = sorted(glob.glob(pattern))
        if not matched:
            raise ValueError(f"input pattern {pattern!r} matches no file")
        files.extend(matched)
    return files


def wikitext_documents(path: str) -> List[List[str]]:
    """WikiText-2 articles (split at ' = Title = ' lines) as lists of sentences."""
    documents, current = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if re.fullmatch(r"= [^=].* =", line):
                if current:
                    documents.append(current)
                current = []
            elif line and not line.startswith("= ="):
                current.extend(s.strip() + " ." for s in line.split(" . ") if s.strip())
    if current:
        documents.append(current)
    return documents


def write_documents(path: str, documents: List[List[str]], repeats: int = 1) -> int:
    """Writes documents in the google-research/bert format (`repeats` copies); returns words."""
    words = 0
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(repeats):
            for doc in documents:
                f.write("\n".join(doc) + "\n\n")
                words += sum(len(s.split()) for s in doc)
    return words
