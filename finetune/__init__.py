"""Fine-tuning for every task of the GPT-1 and BERT papers.

`from finetune import TextClassifier` (TextRegressor, MultipleChoice, TokenTagger,
QuestionAnswerer, LanguageModel) is the Python API (finetune.api). It is imported with the
package, so `import finetune` registers its classes and the task models with Keras and
`keras.saving.load_model("model.keras")` restores them.
"""
from finetune.api import (LanguageModel, MultipleChoice, QuestionAnswerer, TextClassifier,
                          TextRegressor, TokenTagger)

__all__ = ["TextClassifier", "TextRegressor", "MultipleChoice", "TokenTagger", "QuestionAnswerer",
           "LanguageModel"]
