"""Lesion results for the clinic: a DICOM-SEG with one segment per lesion and a DICOM Structured Report
(TID 1500 Measurement Report, Comprehensive 3D SR) with each lesion's volume, SUVmax, SUVmean, SUVpeak and TLG,
both through highdicom.

Every measurement group of the SR is a volumetric ROI (TID 1411) that references its segment of the SEG
(``ReferencedSegment``: SEG SOP instance + segment number, source series = the PET series) and carries a
tracking identifier ``lesion N`` and UID. Codes: volume SCT 118565006 [mL]; SUVbw DCM 126401 with the
derivations maximum (SCT 56851009), mean (SCT 373098007) and peak value within ROI (DCM 126031) [g/ml{SUVbw}];
total lesion glycolysis DCM 126033 [g] (SUVbw g/mL × mL). The PET images and the SEG are the SR's evidence.

Inputs are arrays on the PET grid exactly as :func:`unipet.io.dicom.read_pet_suv` returns it (``(z, y, x)``,
slices sorted along the normal); the lesion values come from the caller (``unipet.quantify``), so this module
only encodes. No patient identifiers are added: patient and study attributes are copied from the PET series
by highdicom, as in the SEG.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from unipet.errors import DicomError, ImageGeometryError, LabelError
from unipet.fileio import atomic_path, check_writable

#: Lesion measurements written to the SR: (key, what).
MEASURES = ("volume_ml", "suv_max", "suv_mean", "suv_peak", "tlg")


@dataclass
class LesionMeasures:
    """One lesion's values: ``label`` (its value in the label map = its segment number), volume in mL, SUVs
    (body weight, g/mL) and TLG in SUV·mL (= g for SUVbw)."""

    label: int
    volume_ml: float
    suv_max: float
    suv_mean: float
    suv_peak: float
    tlg: float


def _highdicom():
    try:
        import highdicom as hd
        from pydicom.sr.codedict import codes
    except ImportError:
        raise DicomError("writing DICOM-SEG and SR needs highdicom; install it with `pip install unipet[dicom-seg]`"
                         ) from None
    return hd, codes


def pet_sources(source_pet_folder: str | os.PathLike, series_uid: str | None = None) -> list[Any]:
    """The PET series' datasets sorted like the ``(z, y, x)`` arrays of ``read_pet_suv`` (along the normal)."""
    import pydicom

    from unipet.io.dicom import _group, _headers, _pick, sort_slices

    picked = _pick(_group(_headers(source_pet_folder)), "PT", source_pet_folder, series_uid)
    if picked is None:
        raise DicomError(f"no PET series (Modality PT) found in {source_pet_folder}; the SEG and SR must reference "
                         "the PET series the mask was drawn on")
    members = picked[1]
    order, _ = sort_slices([ds for _, ds in members])
    return [pydicom.dcmread(members[i][0]) for i in order]


def write_lesion_seg(labels_zyx: np.ndarray, sources: Sequence[Any], out_path: str | os.PathLike,
                     label_name: str = "lesion", overwrite: bool = False) -> Any:
    """Write a label map (0 = background, 1..N = lesions) as a DICOM-SEG with one segment per lesion.

    Returns:
        The highdicom ``Segmentation`` written (for the SR to reference).

    Raises:
        ImageGeometryError: the label map is not on the PET grid; LabelError: negative, non-integer or empty.
    """
    hd, codes = _highdicom()
    from unipet.version import __version__

    out_path = check_writable(out_path, overwrite)
    labels = np.asarray(labels_zyx)
    shape = (len(sources), int(sources[0].Rows), int(sources[0].Columns))
    if labels.shape != shape:
        raise ImageGeometryError(f"the lesion mask has shape {labels.shape} but the PET series is {shape} (z, y, x); "
                                 "give the mask predicted on this PET (or resample it onto the PET grid)")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise LabelError("the lesion label map must hold non-negative integers (0 = background, N = lesion N)")
    numbers = [int(v) for v in np.unique(labels) if v > 0]
    if not numbers:
        raise LabelError("the mask holds no lesion; there is nothing to report (no SEG or SR written)")
    if numbers != list(range(1, len(numbers) + 1)):
        raise LabelError(f"lesion labels must be 1..N without gaps, got {numbers[:10]}")
    algorithm = hd.AlgorithmIdentificationSequence(name="unipet", version=__version__,
                                                   family=codes.DCM.ArtificialIntelligence)
    descriptions = [hd.seg.SegmentDescription(
        segment_number=n, segment_label=f"{label_name} {n}",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm, tracking_uid=hd.UID(), tracking_id=f"lesion {n}") for n in numbers]
    seg = hd.seg.Segmentation(
        source_images=list(sources), pixel_array=labels.astype(np.uint16),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=hd.UID(), series_number=100, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="unipet", manufacturer_model_name="unipet", software_versions=__version__,
        device_serial_number="0", series_description=f"unipet {label_name}s")
    with atomic_path(out_path, overwrite=overwrite) as tmp:
        seg.save_as(tmp)
    return seg


def write_measurement_sr(lesions: Sequence[LesionMeasures], seg: Any, sources: Sequence[Any],
                         out_path: str | os.PathLike, overwrite: bool = False) -> Any:
    """Write the TID 1500 measurement report of ``lesions``, each referencing its segment of ``seg``.

    Returns:
        The highdicom ``Comprehensive3DSR`` written.
    """
    hd, codes = _highdicom()
    from unipet.version import __version__
    from highdicom.sr import CodedConcept

    out_path = check_writable(out_path, overwrite)
    segments = {int(d.SegmentNumber): d for d in seg.SegmentSequence}
    missing = [m.label for m in lesions if m.label not in segments]
    if missing:
        raise LabelError(f"lesions {missing} have no segment in the SEG; write the SEG from the same label map")
    ml = CodedConcept("mL", "UCUM", "milliliter")
    suv_unit = codes.UCUM.StandardizedUptakeValueBodyWeight
    suvbw = CodedConcept("126401", "DCM", "SUVbw")
    gram = CodedConcept("g", "UCUM", "gram")
    algorithm = hd.sr.AlgorithmIdentification(name="unipet", version=__version__)
    pet_series = hd.sr.SourceSeriesForSegmentation(str(sources[0].SeriesInstanceUID))
    groups = []
    for m in lesions:
        desc = segments[m.label]
        values = [
            hd.sr.Measurement(name=codes.SCT.Volume, value=float(m.volume_ml), unit=ml, algorithm_id=algorithm),
            hd.sr.Measurement(name=suvbw, value=float(m.suv_max), unit=suv_unit, derivation=codes.SCT.Maximum,
                              algorithm_id=algorithm),
            hd.sr.Measurement(name=suvbw, value=float(m.suv_mean), unit=suv_unit, derivation=codes.SCT.Mean,
                              algorithm_id=algorithm),
            hd.sr.Measurement(name=suvbw, value=float(m.suv_peak), unit=suv_unit,
                              derivation=codes.DCM.PeakValueWithinROI, algorithm_id=algorithm),
            hd.sr.Measurement(name=codes.DCM.TotalLesionGlycolysis, value=float(m.tlg), unit=gram,
                              algorithm_id=algorithm),
        ]
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=str(desc.TrackingUID), identifier=f"lesion {m.label}"),
            referenced_segment=hd.sr.ReferencedSegment(sop_class_uid=seg.SOPClassUID,
                                                       sop_instance_uid=seg.SOPInstanceUID,
                                                       segment_number=m.label, source_series=pet_series),
            finding_type=codes.SCT.Lesion, algorithm_id=algorithm, measurements=values))
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(uid=hd.UID(), name="unipet"))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.LN.PETWholeBody, imaging_measurements=groups)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[*sources, seg], content=report, series_instance_uid=hd.UID(), series_number=101,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="unipet", is_complete=True, is_final=False,
        is_verified=False, series_description="unipet lesion measurements")
    with atomic_path(out_path, overwrite=overwrite) as tmp:
        sr.save_as(tmp)
    return sr


def read_measurement_sr(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a TID 1500 report back (highdicom): one dict per volumetric ROI group with ``tracking_id``,
    ``segment_number``, ``seg_uid``, ``source_series_uid`` and the measures of :data:`MEASURES`."""
    hd, codes = _highdicom()

    sr = hd.sr.srread(path)
    out = []
    for group in sr.content.get_volumetric_roi_measurement_groups():
        ref = group.referenced_segment
        source = ref.source_series_for_segmentation
        row: dict[str, Any] = {"tracking_id": group.tracking_identifier, "tracking_uid": str(group.tracking_uid),
                               "segment_number": int(ref.referenced_segment_numbers[0]),
                               "seg_uid": str(ref.referenced_sop_instance_uid),
                               "source_series_uid": str(source.value) if source is not None else None}
        for meas in group.get_measurements():
            name = meas.name
            derivation = meas.derivation
            key = {("118565006", None): "volume_ml", ("126033", None): "tlg",
                   ("126401", "56851009"): "suv_max", ("126401", "373098007"): "suv_mean",
                   ("126401", "126031"): "suv_peak"}.get((name.value, derivation.value if derivation else None))
            if key:
                row[key] = float(meas.value)
        out.append(row)
    return out
