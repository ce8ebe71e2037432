"""Model zoo: every architecture behind one ``create(name, ...)`` (see ``registry``).

Architecture modules register themselves when imported; ``registry.create`` imports them all lazily.
"""
from unipet.models.registry import available, create, info, register

__all__ = ["available", "create", "info", "register"]
