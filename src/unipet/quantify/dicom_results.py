"""A lesion mask on a DICOM PET series → its PACS results: DICOM-SEG (one segment per lesion), the TID 1500 SR
with each lesion's measures and, on request, an RT Structure Set — measured here, encoded by ``unipet.io``.

Used by ``unipet dicom-sr`` and by the DICOM node (``unipet.serve``), so both write the same objects.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from unipet.errors import ImageGeometryError


def write_lesion_results(mask_zyx: np.ndarray, mask_affine: np.ndarray, dicom_dir: str | os.PathLike,
                         seg_path: Path, sr_path: Path, label: str = "lesion", series: str | None = None,
                         connectivity: int = 18, rtstruct_path: Path | None = None, task: str | None = None,
                         per_lesion_rois: bool = True, overwrite: bool = False) -> Any:
    """Measure every lesion of a mask on its PET series and write the SEG and SR (and the RTSTRUCT when
    ``rtstruct_path`` is given).

    Lesions are the mask's connected components (``connectivity``, autoPET's 18 by default), numbered in raster
    order like ``unipet quantify``'s lesion table; SUV is body-weight SUV of the series (QIBA rules); SUVpeak is
    PERCIST's (the highest mean SUV in a 1 mL sphere within the lesion).

    Args:
        mask_zyx: binary mask ``(z, y, x)`` on the PET grid; ``mask_affine`` its RAS affine (checked, 0.01 mm).
        dicom_dir: folder holding the PET series.
        seg_path, sr_path, rtstruct_path: files to write (``rtstruct_path`` None: no RTSTRUCT).
        task: named in the RTSTRUCT's ROI names; ``per_lesion_rois``: one ROI per lesion, else one for all.

    Returns:
        The lesion table (``unipet.quantify.lesion_table``).

    Raises:
        ImageGeometryError: the mask is not on the PET grid; LabelError: the mask holds no lesion.
    """
    from unipet.components import label_components
    from unipet.io.dicom import read_pet_suv
    from unipet.io.dicom_sr import LesionMeasures, pet_sources, write_lesion_seg, write_measurement_sr
    from unipet.io.rtstruct import lesion_rois, write_rtstruct
    from unipet.quantify.biomarkers import lesion_table
    from unipet.study import same_grid, spacing_from_affine
    from unipet.fileio import check_writable

    for path in (seg_path, sr_path, rtstruct_path):
        if path is not None:
            check_writable(path, overwrite)
    mask = np.asarray(mask_zyx)
    suv, pet_affine, _ = read_pet_suv(dicom_dir, kind="bw", series_uid=series)
    if not same_grid(mask.shape, mask_affine, suv.shape, pet_affine, tol_mm=1e-2):
        raise ImageGeometryError(f"the mask is not on the grid of the PET series in {dicom_dir}; give the mask "
                                 "predicted from this PET (or resample it onto the PET grid)")
    spacing = spacing_from_affine(pet_affine)
    table = lesion_table(suv, mask > 0, spacing, pet_affine, connectivity=connectivity)
    labels, n = label_components(mask > 0, connectivity)
    counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    if n != len(table) or not np.array_equal(counts, table["voxels"].to_numpy()):
        raise ImageGeometryError("lesion numbering of the label map and the lesion table differ; report this bug")
    lesions = [LesionMeasures(label=int(r.lesion), volume_ml=float(r.mtv_ml), suv_max=float(r.suv_max),
                              suv_mean=float(r.suv_mean), suv_peak=float(r.suv_peak_percist), tlg=float(r.tlg))
               for r in table.itertuples()]
    sources = pet_sources(dicom_dir, series)
    for path in (seg_path, sr_path, rtstruct_path):
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    seg = write_lesion_seg(labels, sources, seg_path, label_name=label, overwrite=overwrite)
    write_measurement_sr(lesions, seg, sources, sr_path, overwrite=overwrite)
    if rtstruct_path is not None:
        roi_labels, names = lesion_rois(mask, task, per_lesion_rois, connectivity)
        write_rtstruct(roi_labels, sources, rtstruct_path, names, overwrite=overwrite)
    return table
