"""Fine-tuning for every task of the GPT-1 and BERT papers.

`from finetune import TextClassifier` (TextRegressor, MultipleChoice, TokenTagger,
QuestionAnswerer, LanguageModel) is the Python API (finetune.api). It is imported with the
package, so `import finetune` registers its classes and the task models with Keras and
`keras.saving.load_model("model.keras")` restores them.

TensorFlow is imported here with its C++ start-up lines filtered (tfmodels.quiet_logs;
TF_CPP_MIN_LOG_LEVEL=0 keeps them).
"""
from tfmodels.quiet_logs import import_tensorflow_quietly

import_tensorflow_quietly()
from finetune.api import (LanguageModel, MultipleChoice, QuestionAnswerer, TextClassifier,
                          TextRegressor, TokenTagger)

__all__ = ["TextClassifier", "TextRegressor", "MultipleChoice", "TokenTagger", "QuestionAnswerer",
           "LanguageModel"]
