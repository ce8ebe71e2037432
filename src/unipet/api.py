"""The main job in one call: ``unipet.segment(study_or_path)`` → the lesion mask and its lesion table, in memory.

::

    import unipet

    mask, lesions = unipet.segment("autopet/")          # one study: a folder, a manifest, or a Study
    mask.to_filename("mask.nii.gz")                      # a nibabel image on the study's grid
    print(lesions)                                       # one row per lesion: volume (mL), centroid (RAS mm)

Without ``checkpoint`` the model shipped with unipet is used (``unipet.checkpoint.default_checkpoint``); a run
folder of ``unipet train`` or a checkpoint folder selects another. Preprocessing, sliding window and the return to
the input grid follow the checkpoint's metadata, as ``unipet predict`` does (``unipet.infer.Predictor``).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, NamedTuple

from unipet.errors import ConfigError
from unipet.study import Study


class Segmentation(NamedTuple):
    """What ``segment`` returns (unpacks as ``mask, lesions``).

    Attributes:
        mask: ``nibabel.Nifti1Image`` of uint8 labels on the input study's grid (0 background, 1 lesion); its
            header's ``descrip`` names the checkpoint that made it.
        lesions: ``pandas.DataFrame``, one row per connected lesion: ``id`` (its label in the connected-components
            map), ``voxels``, ``volume_ml``, ``centroid_x_mm``, ``centroid_y_mm``, ``centroid_z_mm`` (RAS); the task
            used and its probability (prompt-free models) are in ``lesions.attrs``.
    """

    mask: Any
    lesions: Any


def segment(study_or_path: Study | str | Path, task: str | None = None, checkpoint: str | Path | None = None,
            device: str = "auto", backend: str = "torch") -> Segmentation:
    """Segment the lesions of one PET/CT study.

    Args:
        study_or_path: a :class:`~unipet.study.Study`, or a path holding exactly one study: a manifest JSON, an
            autoPET or nnU-Net raw folder, or a DICOM folder (as ``unipet predict`` reads them; DICOM is converted
            in a temporary folder).
        task: task name (e.g. ``"lymphoma"``), ``"auto"`` (the model infers it), or None: the study's own task,
            else ``"auto"``.
        checkpoint: run or checkpoint folder; None = the checkpoint shipped with unipet.
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        backend: ``"torch"``, ``"onnxruntime"`` or ``"openvino"`` (``unipet.infer.backends``; ``checkpoint`` may then
            be an ``unipet export`` folder).

    Returns:
        ``Segmentation(mask, lesions)``.

    Raises:
        UnipetError: unreadable input, a path holding several studies, an unknown task or device.
    """
    import pandas as pd

    from unipet.checkpoint import default_checkpoint
    from unipet.infer.batch import collect_cases
    from unipet.infer.predictor import AUTO, LESION_COLUMNS, MODEL_TAG, Predictor, check_device, lesion_rows
    from unipet.io.nifti import to_nifti_image

    check_device(device)
    predictor = Predictor.from_checkpoint(checkpoint if checkpoint is not None else default_checkpoint(),
                                          device=device, backend=backend)
    if task not in (None, AUTO):
        predictor.task_index(task)  # an unknown task fails before the study is read
    with tempfile.TemporaryDirectory(prefix="unipet-segment-") as scratch:
        cases = collect_cases(study_or_path, scratch, predictor.task_set)
        if len(cases) != 1:
            raise ConfigError(f"{study_or_path} holds {len(cases)} studies; unipet.segment takes one — use "
                              "`unipet predict` or unipet.infer.predict_batch for a cohort")
        study = cases[0].load()
        prediction = predictor.predict_study(study, task=task)
    tag = None if predictor.checkpoint_id is None else MODEL_TAG + predictor.checkpoint_id
    lesions = pd.DataFrame(lesion_rows(prediction.lesions), columns=list(LESION_COLUMNS))
    lesions.attrs.update(study_id=study.study_id, task=prediction.task, task_probability=prediction.task_probability,
                         checkpoint_id=predictor.checkpoint_id)
    return Segmentation(to_nifti_image(prediction.mask.astype("uint8"), study.affine, tag), lesions)
