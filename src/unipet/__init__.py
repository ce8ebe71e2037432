"""unipet: universal, prompt-driven lesion segmentation in whole-body PET/CT.

The one data object is :class:`unipet.study.Study`; see ``../shared/DESIGN.md`` for the data flow.
"""
from unipet.errors import UnipetError
from unipet.study import Study
from unipet.tasks import Task, TaskSet
from unipet.version import __version__

__all__ = ["Segmentation", "Study", "Task", "TaskSet", "UnipetError", "__version__", "segment"]

#: names served lazily from ``unipet.api`` (it imports torch; ``import unipet`` stays light)
_API = ("segment", "Segmentation")


def __getattr__(name: str):
    if name in _API:
        from unipet import api

        return getattr(api, name)
    raise AttributeError(f"module 'unipet' has no attribute {name!r}")
