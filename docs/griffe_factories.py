"""Griffe extension for the API reference (mkdocs.yml).

``layers.RNN``, ``layers.LSTMCell`` and the other Keras-named constructors build the chosen
backend's object in ``__new__``; some are classes made at import time (``LSTMCell =
cell_factory("LSTMCell")``), which static analysis sees as plain assignments. This extension
replaces those with the classes an import of the module finds, and shows ``__new__``'s
parameters as each class's signature, as ``help()`` and ``inspect.signature`` do.
"""

from __future__ import annotations

from typing import Any

import griffe

RUNTIME_MODULES = ("rnn_xframework.layers",)


def new_as_signature(cls: griffe.Class) -> None:
    """Give a class with ``__new__`` and no ``__init__`` an ``__init__`` of the same parameters."""
    new = cls.members.get("__new__")
    if isinstance(new, griffe.Function) and "__init__" not in cls.members:
        init = griffe.Function("__init__", parameters=new.parameters, lineno=new.lineno, endlineno=new.endlineno)
        cls.set_member("__init__", init)


class FactoryClasses(griffe.Extension):
    def on_class_members(self, *, cls: griffe.Class, **kwargs: Any) -> None:
        new_as_signature(cls)

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        for path in RUNTIME_MODULES:
            static = loader.modules_collection.get_member(path)
            inspected = griffe.inspect(
                path, docstring_parser=loader.docstring_parser, docstring_options=loader.docstring_options
            )
            for name, member in inspected.members.items():
                if isinstance(member, griffe.Class) and isinstance(static.members.get(name), griffe.Attribute):
                    new_as_signature(member)
                    static.set_member(name, member)
