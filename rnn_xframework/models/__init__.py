"""Whole-model ports: one framework-neutral description of a model (:mod:`.graph`), a reader per
source framework (:mod:`.keras_reader`) and an emitter per target (:mod:`.torch_code`, run live
by :mod:`.torch_module` and written out by :mod:`.torch_source`); :mod:`.parity_check` checks a port.

The public verbs are :func:`rnn_xframework.to_torch`, :func:`rnn_xframework.to_torch_source` and
:func:`rnn_xframework.compare` (:mod:`.api`). Importing this package imports no framework.
"""

from __future__ import annotations

from rnn_xframework.models.api import compare, to_torch, to_torch_source

__all__ = ["compare", "to_torch", "to_torch_source"]
