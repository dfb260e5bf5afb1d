"""The TensorFlow compile methods of :func:`rnn_xframework.compile`: ``"tf.function"`` and ``"xla"``
(:mod:`.function`), on the traced loops of :mod:`.graph_loops` and the bounded per-shape caches of :mod:`.cache`."""
