"""The layer registry: section name (and aliases) -> the class that declares everything about that layer type.

Layer modules register their classes with :func:`register` when ``utils.darknet.layers`` is imported (the
package ``utils.darknet`` does so on import), so every lookup here sees every type.
"""
from __future__ import annotations

from typing import Callable, TypeVar

NET = "net"

LAYER_TYPES: dict[str, type] = {}
ALIASES: dict[str, str] = {"network": NET}  # Darknet's is_network() takes both headers

T = TypeVar("T", bound=type)


def register(name: str, *aliases: str) -> Callable[[T], T]:
    """Class decorator: the layer type of ``[name]`` sections (and of each alias). A name or alias that is
    already taken is refused, so one module cannot silently replace another's layer."""
    def add(cls: T) -> T:
        for taken in (name, *aliases):
            if taken in LAYER_TYPES or taken in ALIASES or taken == NET:
                owner = LAYER_TYPES.get(canonical(taken))
                raise ValueError(f"layer name [{taken}] is already registered"
                                 + (f" by {owner.__module__}.{owner.__qualname__}" if owner else ""))
        LAYER_TYPES[name] = cls
        ALIASES.update({alias: name for alias in aliases})
        cls.section_name = name
        return cls
    return add


def canonical(name: str) -> str:
    """The registered name a section header stands for (``conv`` -> ``convolutional``); unknown names as given."""
    return ALIASES.get(name, name)


def layer_type(name: str) -> type | None:
    return LAYER_TYPES.get(canonical(name))


def known_names() -> str:
    return ", ".join(f"[{name}]" for name in LAYER_TYPES)
