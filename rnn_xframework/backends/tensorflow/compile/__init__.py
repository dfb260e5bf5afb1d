"""The TensorFlow compile methods of :func:`rnn_xframework.compile`: ``"tf.function"`` and ``"xla"``
(:mod:`.function`), on the traced loops of :mod:`.loops` and the bounded per-shape caches of :mod:`.cache`."""
