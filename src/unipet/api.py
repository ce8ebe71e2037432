"""The main job in one call: ``unipet.segment(study_or_path)`` → the lesion mask and its lesion table, in memory.

::

    import unipet

    result = unipet.segment("unipet-demo/cohort/PH1_0002/PH1_0002_0")   # one study folder (SUV + CTres inside)
    mask, lesions = result                               # it unpacks as (mask, lesions), as before
    mask.to_filename("mask.nii.gz")                      # a nibabel image on the study's grid
    print(result.task, result.task_source, result.task_probability)   # e.g. "melanoma study None"
    print(lesions)                                       # one row per lesion: volume (mL), centroid (RAS mm)

    unipet.segment(pet="a/SUV.nii.gz", ct="a/CTres.nii.gz", task="auto")   # a pair of files

Without ``checkpoint`` the model shipped with unipet is used (``unipet.checkpoint.default_checkpoint``); a run
folder of ``unipet train`` or a checkpoint folder selects another. Preprocessing, sliding window and the return to
the input grid follow the checkpoint's metadata, as ``unipet predict`` does (``unipet.infer.Predictor``).

The result says which task was used and how it was chosen. With ``task="auto"`` (or no task where the study has
none) the model's classifier chooses; below ``unipet.infer.predictor.AUTO_CONFIDENCE`` (0.5) the choice is
reported as unsure in one warning line on the ``unipet`` logger that suggests ``task=``.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from unipet.errors import ConfigError
from unipet.study import Study

log = logging.getLogger("unipet")


@dataclass
class Segmentation:
    """What ``segment`` returns. It unpacks as ``mask, lesions`` (and indexes as ``result[0]``, ``result[1]``),
    so code written for the earlier two-field result keeps working; the task facts are attributes.

    Attributes:
        mask: ``nibabel.Nifti1Image`` of uint8 labels on the input study's grid (0 background, 1 lesion); its
            header's ``descrip`` names the checkpoint that made it.
        lesions: ``pandas.DataFrame``, one row per connected lesion: ``id`` (its label in the connected-components
            map), ``voxels``, ``volume_ml``, ``centroid_x_mm``, ``centroid_y_mm``, ``centroid_z_mm`` (RAS); the
            task facts below are repeated in ``lesions.attrs``.
        task: the task (cancer type) used, or None for a model without prompts.
        task_source: ``"given"`` (``task=``), ``"study"`` (the study's own task, e.g. from autoPET metadata),
            ``"auto"`` (inferred by the model's classifier) or None.
        task_probability: the inferred task's probability (``task_source == "auto"``), else None.
        task_probabilities: ``{task: probability}`` of every task when inferred, else None.
        study_id, checkpoint_id: which study, and the id of the checkpoint that segmented it.
    """

    mask: Any
    lesions: Any
    task: str | None = None
    task_source: str | None = None
    task_probability: float | None = None
    task_probabilities: dict[str, float] | None = field(default=None)
    study_id: str | None = None
    checkpoint_id: str | None = None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.mask, self.lesions))

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> Any:
        return (self.mask, self.lesions)[index]

    @property
    def task_uncertain(self) -> bool:
        """True when the task was inferred with a probability below ``AUTO_CONFIDENCE``."""
        from unipet.infer.predictor import task_is_uncertain

        return task_is_uncertain(self.task_source, self.task_probability)


def checkpoint_meta(path: str | Path):
    """The ``CheckpointMeta`` of a checkpoint / run folder or of an ``unipet export`` folder, read without the
    model stack (the export reader is imported only for an export folder)."""
    from unipet.checkpoint import read_meta

    if (Path(path) / "export.json").is_file():
        from unipet.infer.backends.bundle import read_export

        return read_export(path)[0]
    return read_meta(path)


def segment(study_or_path: Study | str | Path | None = None, task: str | None = None,
            checkpoint: str | Path | None = None, device: str = "auto", backend: str = "torch", *,
            pet: str | Path | None = None, ct: str | Path | None = None) -> Segmentation:
    """Segment the lesions of one PET/CT study.

    Args:
        study_or_path: a :class:`~unipet.study.Study`, or a path holding exactly one study: one autoPET study
            folder (``SUV.nii.gz`` + ``CTres.nii.gz`` inside), a patient or autoPET root folder, an nnU-Net raw
            folder or a manifest JSON of one study, or a DICOM folder (converted in a temporary folder); see
            ``unipet.io.inputs``. None when ``pet`` is given.
        task: task name (e.g. ``"lymphoma"``; ``"lung cancer"`` finds ``lung_cancer``), ``"auto"`` (the model
            infers it), ``"any"`` (a cancer type without a prompt: every prompt is run, voxel-wise maximum of
            the lesion probability), or None: the study's own task, else ``"auto"``.
        checkpoint: run or checkpoint folder; None = the checkpoint shipped with unipet.
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        backend: ``"torch"``, ``"onnxruntime"`` or ``"openvino"`` (``unipet.infer.backends``; ``checkpoint`` may then
            be an ``unipet export`` folder).
        pet, ct: one study as a pair of NIfTI files (PET in SUV, CT in HU) instead of ``study_or_path``.

    Returns:
        A :class:`Segmentation` (unpacks as ``mask, lesions``).

    Raises:
        UnipetError: unreadable input, a path holding several studies, an unknown task or device.
    """
    import pandas as pd

    from unipet.checkpoint import default_checkpoint
    from unipet.io.inputs import resolve_input

    if isinstance(study_or_path, Study):
        from unipet.io.plausibility import check_study

        check_study(study_or_path)  # as load_study checks files: a CT given as PET, no HU, a misaligned pair, ...
    else:
        resolve_input(study_or_path, pet=pet, ct=ct)  # a wrong path or layout fails before the model is loaded
    ckpt = checkpoint if checkpoint is not None else default_checkpoint()
    from unipet.infer.predictor import ANY, AUTO

    if task not in (None, AUTO, ANY):
        checkpoint_meta(ckpt).task_set.index(task)  # an unknown task fails before the model is loaded

    from unipet.infer.batch import collect_cases
    from unipet.infer.predictor import (LESION_COLUMNS, MODEL_TAG, Predictor, check_device, lesion_rows,
                                        uncertain_task_warning)
    from unipet.io.nifti import to_nifti_image

    check_device(device)
    predictor = Predictor.from_checkpoint(ckpt, device=device, backend=backend)
    with tempfile.TemporaryDirectory(prefix="unipet-segment-") as scratch:
        cases = collect_cases(study_or_path, scratch, predictor.task_set, pet=pet, ct=ct)
        if len(cases) != 1:
            raise ConfigError(f"{study_or_path} holds {len(cases)} studies; unipet.segment takes one — give one "
                              "study folder (or pet=, ct=), or use `unipet predict` / unipet.infer.predict_batch "
                              "for a cohort")
        study = cases[0].load()
        prediction = predictor.predict_study(study, task=task)
    tag = None if predictor.checkpoint_id is None else MODEL_TAG + predictor.checkpoint_id
    lesions = pd.DataFrame(lesion_rows(prediction.lesions), columns=list(LESION_COLUMNS))
    facts = dict(task=prediction.task, task_source=prediction.task_source,
                 task_probability=prediction.task_probability, task_probabilities=prediction.task_probabilities,
                 study_id=study.study_id, checkpoint_id=predictor.checkpoint_id)
    lesions.attrs.update(facts)
    if prediction.task_uncertain:
        log.warning("%s: %s", study.study_id, uncertain_task_warning(prediction.task, prediction.task_probability,
                                                                     prediction.task_probabilities))
    return Segmentation(to_nifti_image(prediction.mask.astype("uint8"), study.affine, tag), lesions, **facts)
