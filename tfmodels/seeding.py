"""Distinct, reproducible seeds for every initializer and dropout layer of one model.

Keras 3 gives an initializer built without a seed a fixed integer seed when it is constructed,
so one `TruncatedNormal` instance shared by several layers returns the same values for every
weight of the same shape: all Transformer layers of a model would start identical. Both papers
draw every weight independently from N(0, 0.02) truncated. A model therefore takes one `seed`
and hands each initializer and dropout layer its own seed from a `SeedStream`:

    seeds = SeedStream(seed)
    dense = keras.layers.Dense(units, kernel_initializer=seeds.truncated_normal(0.02))
    dropout = keras.layers.Dropout(0.1, seed=seeds.next())

The same seed gives the same weights and dropout masks; no global state is read or changed,
except that `SeedStream(None)` draws its base seed from Python's `random` module, as an
unseeded Keras initializer does, so a test or binary that seeds Keras globally still gets
reproducible unseeded models.
"""
from __future__ import annotations

import random
from typing import Optional, Union

import keras

# Keras draws unseeded seeds from [1, 1e9] (keras.src.backend.random.make_default_seed); the
# stream's seeds stay in the positive int32 range every backend accepts.
_MAX_DEFAULT_SEED = int(1e9)
_MAX_SEED = 2**31 - 1


class SeedStream:
    """Deterministic, distinct seeds for every initializer and dropout of one model.

    seed: the model's seed; None draws one from Python's `random` (like unseeded Keras).
    Each `next()` returns a new seed. They come from a private `random.Random(seed)`, not from
    `seed + i`, so models seeded 0 and 1 do not share shifted layers.
    """

    def __init__(self, seed: Optional[int] = None):
        if seed is None:
            seed = random.randint(1, _MAX_DEFAULT_SEED)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"seed must be an int or None, got {seed!r}")
        self.seed = seed
        self._rng = random.Random(seed)

    def next(self) -> int:
        return self._rng.randint(1, _MAX_SEED)

    def truncated_normal(self, stddev: float) -> keras.initializers.Initializer:
        """A new TruncatedNormal(0, stddev) initializer with the next seed."""
        return keras.initializers.TruncatedNormal(stddev=stddev, seed=self.next())

    def glorot_uniform(self) -> keras.initializers.Initializer:
        return keras.initializers.GlorotUniform(seed=self.next())

    def orthogonal(self) -> keras.initializers.Initializer:
        return keras.initializers.Orthogonal(seed=self.next())

    def reseeded(self, initializer: Union[str, dict, keras.initializers.Initializer]
                 ) -> keras.initializers.Initializer:
        """A new instance of `initializer` (an instance, name or config) with the next seed,
        for layers that take one initializer and build several sublayers from it. An
        initializer without a `seed` (zeros, constant) is returned as a fresh copy."""
        initializer = keras.initializers.get(initializer)
        config = initializer.get_config()
        if "seed" in config:
            config["seed"] = self.next()
        return initializer.__class__.from_config(config)

