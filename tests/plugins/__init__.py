"""Extensions written the way a user writes them, outside the package: a backend
(:mod:`plugins.xf_boxed`) and a cell type (:mod:`plugins.xf_mgu`). The tests register them
through the public ``registry.register`` / ``cells.register`` and remove them after."""
