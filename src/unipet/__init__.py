"""unipet: universal, prompt-driven lesion segmentation in whole-body PET/CT.

The one data object is :class:`unipet.study.Study`; see ``../shared/DESIGN.md`` for the data flow.
"""
from unipet.errors import UnipetError
from unipet.study import Study
from unipet.tasks import Task, TaskSet
from unipet.version import __version__

__all__ = ["Study", "Task", "TaskSet", "UnipetError", "__version__"]
