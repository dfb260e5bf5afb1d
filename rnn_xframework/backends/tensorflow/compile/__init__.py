"""The TensorFlow compile methods of :func:`rnn_xframework.compile`: ``"tf.function"`` and ``"xla"``
(:mod:`.function`, the compiled object), on the per-structure graphs of :mod:`.graphs`, the traced
loops of :mod:`.graph_loops` and the bounded per-shape caches of :mod:`.cache`."""
