"""Makes Keras 3 models' lists of layers visible to `tf.train.Checkpoint`.

Keras 3 (TensorFlow backend) hands its tracked list attributes to TensorFlow's dependency
graph only when exporting a SavedModel, not when writing a checkpoint, so
`tf.train.Checkpoint(model=BertEncoder(...))` would silently skip every Transformer layer
(`self.transformer_layers = [...]`) and a restored run would keep random weights there.
Models that keep layers in lists inherit this mixin first.
"""
import tensorflow as tf


class CheckpointListsMixin:
    """Adds each list attribute of trackables as a checkpoint child (`name/0`, `name/1`...)."""

    @tf.__internal__.tracking.no_automatic_dependency_tracking
    def _trackable_children(self, save_type="checkpoint", **kwargs):
        children = super()._trackable_children(save_type, **kwargs)
        if save_type != "checkpoint":
            return children
        # The saver asks for children several times and matches them by identity, so each
        # list's wrapper is made once and kept (outside Keras' own attribute tracking).
        wrappers = self.__dict__.setdefault("_checkpoint_list_wrappers", {})
        for name in getattr(self, "_tracked", ()):
            value = getattr(self, name, None)
            if (name not in children and isinstance(value, (list, tuple))
                    and any(isinstance(v, tf.__internal__.tracking.Trackable) for v in value)):
                cached = wrappers.get(name)
                if cached is None or list(cached) != list(value):
                    cached = wrappers[name] = tf.__internal__.tracking.wrap(list(value))
                children[name] = cached
        return children
