"""Readers: task files -> lists of the example types in finetune.examples.

One module per file family: glue (TSV and TFDS, table-driven), squad (JSON), choice (SWAG,
RACE, Story Cloze), conll (NER). Every reader raises DataError (a ValueError) naming the file,
the line or JSON path, and the reason.
"""
from finetune.readers.choice import read_race, read_story_cloze, read_swag
from finetune.readers.common import DataError, holdout_split
from finetune.readers.conll import CONLL2003_TAGS, read_conll
from finetune.readers.glue import GLUE_FORMATS, GlueFormat, TsvLayout, read_glue_tsv, read_tfds_glue
from finetune.readers.squad import read_squad

__all__ = [
    "CONLL2003_TAGS", "DataError", "GLUE_FORMATS", "GlueFormat", "TsvLayout", "holdout_split",
    "read_conll", "read_glue_tsv", "read_race", "read_squad", "read_story_cloze", "read_swag",
    "read_tfds_glue",
]
