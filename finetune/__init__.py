"""Fine-tuning for every task of the GPT-1 and BERT papers.

`from finetune import TextClassifier` (TextRegressor, MultipleChoice, TokenTagger,
QuestionAnswerer, LanguageModel) is the
Python API (finetune.api); it is imported on first use so that importing a light submodule
(readers, tasks) does not load TensorFlow.
"""

__all__ = ["TextClassifier", "TextRegressor", "MultipleChoice", "TokenTagger", "QuestionAnswerer",
           "LanguageModel"]


def __getattr__(name):
    if name in __all__:
        from finetune import api
        return getattr(api, name)
    raise AttributeError(f"module 'finetune' has no attribute {name!r}")
