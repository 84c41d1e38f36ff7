"""TrainStep applies Adam's exact update to embeddings read by lookups (repeated ids), without
needing the torch reference: the training-parity harness found Keras' Adam mishandling the
IndexedSlices such lookups produce (tools/parity, tfmodels/training.py)."""
import keras
import numpy as np
import tensorflow as tf

from tfmodels.optimization import create_optimizer
from tfmodels.training import TrainStep

IDS = np.array([[1, 1, 1, 2], [2, 3, 1, 1]], np.int32)   # row 1 five times, 2 twice, 3 once
DIRECTION = np.array([0.5, -1.0, 2.0], np.float32)


class Lookup(keras.Model):
    def __init__(self):
        super().__init__()
        self.embedding = keras.layers.Embedding(5, 3, embeddings_initializer="zeros")
        self.embedding.build((None, None))

    def call(self, batch, training=None):
        return {"vectors": self.embedding(batch["input_ids"])}


def linear_loss(outputs, batch):
    # d loss / d row r = (occurrences of r) * DIRECTION, the same at every step.
    return {"loss": tf.reduce_sum(outputs["vectors"] * DIRECTION)}


def keras_adam(grad, steps, lr, beta_1=0.9, beta_2=0.999, eps=1e-6):
    """Keras' Adam update on a constant dense gradient, in NumPy, as Keras computes it: the
    moments decay by the Python floats 1 - beta, the bias correction powers the float32 betas
    (1 - beta_2 in float32 is 1.3e-5 off, which shows at this tolerance)."""
    var, m, v = np.zeros_like(grad), np.zeros_like(grad), np.zeros_like(grad)
    for t in range(1, steps + 1):
        m += (grad - m) * (1 - beta_1)
        v += (grad ** 2 - v) * (1 - beta_2)
        correction = (np.sqrt(1 - np.float32(beta_2) ** t) / (1 - np.float32(beta_1) ** t))
        var -= lr * correction * m / (np.sqrt(v) + eps)
    return var


def test_repeated_ids_get_the_dense_adam_update():
    model = Lookup()
    optimizer = create_optimizer(0.1, total_steps=10, decay="constant", weight_decay=0.0)
    step = TrainStep(model, optimizer, linear_loss)
    for _ in range(3):
        step({"input_ids": tf.constant(IDS)})
    counts = np.bincount(IDS.ravel(), minlength=5).astype(np.float32)
    expected = keras_adam(counts[:, None] * DIRECTION, steps=3, lr=0.1)
    np.testing.assert_allclose(model.embedding.embeddings.numpy(), expected, atol=1e-6)
