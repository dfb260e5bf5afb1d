"""Griffe extension for the API reference (mkdocs.yml): a class whose ``__new__`` builds the object
(``layers.RNN``, ``layers.LSTMCell``, ...: they return the chosen backend's native object) shows
``__new__``'s parameters as its signature, as ``help()`` and ``inspect.signature`` do."""

from __future__ import annotations

from typing import Any

import griffe


class NewAsSignature(griffe.Extension):
    """Give a class with ``__new__`` and no ``__init__`` an ``__init__`` of the same parameters."""

    def on_class_members(self, *, cls: griffe.Class, **kwargs: Any) -> None:
        new = cls.members.get("__new__")
        if isinstance(new, griffe.Function) and "__init__" not in cls.members:
            init = griffe.Function("__init__", parameters=new.parameters, lineno=new.lineno, endlineno=new.endlineno)
            cls.set_member("__init__", init)
