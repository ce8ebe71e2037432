"""Binary lesion masks → DICOM-SEG (via highdicom), referencing the PET series they were drawn on.

The mask is a ``(z, y, x)`` array on the PET grid exactly as :func:`unipet.io.dicom.read_pet_suv` returns it;
its slices are matched to the PET instances in the same order (sorted along the slice normal), so the SEG
frames reference the right source images.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from unipet.errors import DicomError, ImageGeometryError
from unipet.fileio import atomic_path, check_writable
from unipet.study import check_binary_mask, same_grid


def write_dicom_seg(
    mask_zyx: np.ndarray,
    source_pet_folder: str | os.PathLike,
    out_path: str | os.PathLike,
    label_name: str = "lesion",
    overwrite: bool = False,
    series_uid: str | None = None,
    affine: np.ndarray | None = None,
) -> Path:
    """Write a binary mask as a DICOM Segmentation object.

    Args:
        mask_zyx: binary mask ``(z, y, x)`` (0/1 or bool) on the PET grid.
        source_pet_folder: folder holding the PET series the mask belongs to.
        out_path: ``.dcm`` file to write.
        label_name: segment label (e.g. ``"lesion"``).
        overwrite: replace an existing ``out_path``.
        series_uid: the PET SeriesInstanceUID; default as ``read_pet_suv`` chooses (the only PET series, else the
            only attenuation-corrected one).
        affine: the mask's 4x4 RAS affine (e.g. from its NIfTI); when given, the mask must lie on the PET series'
            grid (positions within 0.01 mm), not only have its shape.

    Returns:
        ``out_path``.

    Raises:
        OutputExistsError: ``out_path`` exists and ``overwrite`` is False.
        DicomError: no PET series, or highdicom is not installed.
        ImageGeometryError: the mask's shape differs from the PET grid, or its ``affine`` puts it elsewhere.
        LabelError: the mask is not binary.
    """
    try:
        import highdicom as hd
        from pydicom.sr.codedict import codes
    except ImportError:
        raise DicomError("writing DICOM-SEG needs highdicom; install it with `pip install unipet[dicom-seg]`") from None
    import pydicom

    from unipet.version import __version__
    from unipet.io.dicom import _group, _headers, _pick_pet, sort_slices

    out_path = check_writable(out_path, overwrite)
    mask = check_binary_mask(np.asarray(mask_zyx), "DICOM-SEG mask")
    groups = _group(_headers(source_pet_folder))
    picked = _pick_pet(groups, source_pet_folder, series_uid)
    if picked is None:
        raise DicomError(f"no PET series (Modality PT) found in {source_pet_folder}; the SEG must reference the "
                         "PET series the mask was drawn on")
    members = picked[1]
    order, pet_affine = sort_slices([ds for _, ds in members])
    sources = [pydicom.dcmread(members[i][0]) for i in order]
    shape = (len(sources), int(sources[0].Rows), int(sources[0].Columns))
    if mask.shape != shape:
        raise ImageGeometryError(f"the mask has shape {mask.shape} but the PET series is {shape} (z, y, x); "
                                 "resample the mask onto the PET grid first")
    if affine is not None and not same_grid(mask.shape, affine, shape, pet_affine, tol_mm=1e-2):
        raise ImageGeometryError(f"the mask is not on the grid of the PET series in {source_pet_folder}; give the "
                                 "mask predicted from this PET (or resample it onto the PET grid)")
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=label_name,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="unipet", version=__version__, family=codes.DCM.ArtificialIntelligence),
    )
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=mask.astype(bool),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=hd.UID(),
        series_number=100,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="unipet",
        manufacturer_model_name="unipet",
        software_versions=__version__,
        device_serial_number="0",
        series_description=f"unipet {label_name}",
    )
    with atomic_path(out_path, overwrite=overwrite) as tmp:
        seg.save_as(tmp)
    return Path(out_path)
