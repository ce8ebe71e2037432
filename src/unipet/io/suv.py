"""PET → SUV per the QIBA vendor-neutral rules, and the body-size normalisations.

The conversion works on the headers of one PET series (pydicom datasets, already sorted in slice order)
and yields one multiplicative factor per slice: ``SUV = (stored × RescaleSlope + RescaleIntercept) × factor``.

Supported ``Units`` (0054,1001):

- ``BQML``: activity concentration (Bq/mL), converted with the decay-corrected injected dose;
- ``CNTS`` (Philips): the private SUV scale factor (7053,1000) gives SUVbw, or the private activity
  concentration scale factor (7053,1009) gives Bq/mL;
- ``GML`` / ``CM2ML``: already an SUV; ``SUVType`` (0054,1006) says which normalisation (GML without it is
  SUVbw, CM2ML is SUVbsa). It is re-normalised to the ``kind`` asked for.

``DecayCorrection`` (0054,1102) ``START`` (to the scan start), ``ADMIN`` (to the injection) and ``NONE``
(each slice decay-corrected to its own acquisition start, with the frame-averaging correction
λT / (1 − e^(−λT)) over its ActualFrameDuration) are handled.

Scan start (QIBA): SeriesDate/Time, unless it is after the earliest AcquisitionDate/Time (a post-processed
series). Then the GE private "PET scan datetime" (0009,100D) if present, else the earliest acquisition start,
moved back to the series reference time with FrameReferenceTime (0054,1300) and ActualFrameDuration when both
are given (``start = acquisition + mean count time in the frame − FrameReferenceTime``).

Injection: RadiopharmaceuticalStartDateTime (0018,1078), else the scan date + RadiopharmaceuticalStartTime
(0018,1072), one day earlier when that falls after the scan (uptake across midnight).

Dose rule: RadionuclideTotalDose (0018,1074) is Bq by the standard; a value below 1e5 is read as MBq
(no PET study injects less than 0.1 MBq, and no study injects 100 GBq or more), so it is multiplied by 1e6.

Normalisers (``kind``), all computed from weight (kg), height (m) and sex ("M", "F"; "O" = mean of the male
and female values, which reproduces the IBSI DRO with sex "O"):

- ``bw``: body weight;
- ``lbm-james``: lean body mass, James 1976 (male 1.10 W − 128 (W/H)², female 1.07 W − 148 (W/H)², H in cm);
- ``lbm-janma``: lean body mass, Janmahasatian 2005 (9270 W / (6680 + 216 BMI) male, / (8780 + 244 BMI) female);
- ``bsa``: body surface area, DuBois & DuBois 1916 (0.007184 W^0.425 H^0.725, m²; SUVbsa in cm²/mL);
- ``ibw``: ideal body weight, Zasadny & Wahl 1993 (male 48.0 + 1.06 (H − 152), female 45.5 + 0.91 (H − 152)).

Mass normalisers are used in grams and BSA in cm², so SUVs come out in g/mL (cm²/mL for ``bsa``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Sequence

import numpy as np
from pydicom.multival import MultiValue

from unipet.errors import DicomError

KINDS = ("bw", "lbm-james", "lbm-janma", "bsa", "ibw")
"""SUV normalisations ``read_pet_suv(kind=...)`` can produce."""

# SUVType (0054,1006) defined terms -> our kind. DICOM's plain "LBM" is James' formula.
_SUV_TYPE_TO_KIND = {"BW": "bw", "BSA": "bsa", "LBM": "lbm-james", "LBMJAMES128": "lbm-james",
                     "LBMJANMA": "lbm-janma", "IBW": "ibw"}
_MBQ_BELOW = 1e5  # RadionuclideTotalDose below this is read as MBq (see module docstring)

_TAGS = {
    "PatientWeight": "(0010,1030)", "PatientSize": "(0010,1020)", "PatientSex": "(0010,0040)",
    "RadionuclideTotalDose": "(0018,1074)", "RadionuclideHalfLife": "(0018,1075)",
    "RadiopharmaceuticalStartTime": "(0018,1072)", "RadiopharmaceuticalStartDateTime": "(0018,1078)",
    "Units": "(0054,1001)", "DecayCorrection": "(0054,1102)", "SeriesTime": "(0008,0031)",
    "AcquisitionTime": "(0008,0032)", "ActualFrameDuration": "(0018,1242)",
    "RadiopharmaceuticalInformationSequence": "(0054,0016)",
}
_GE_SCAN_DATETIME = (0x0009, 0x100D)
_PHILIPS_SUV_FACTOR = (0x7053, 0x1000)
_PHILIPS_ACTIVITY_FACTOR = (0x7053, 0x1009)


# ------------------------------------------------------------------------------------------- body size
def _check_body(weight_kg: float | None, height_m: float | None, need_height: bool = True) -> None:
    if weight_kg is None or not weight_kg > 0:
        raise DicomError(f"patient weight must be > 0 kg, got {weight_kg}; give PatientWeight (0010,1030)")
    if need_height and (height_m is None or not height_m > 0):
        raise DicomError(f"patient height must be > 0 m, got {height_m}; give PatientSize (0010,1020)")


def _by_sex(sex: str | None, male: float, female: float) -> float:
    """Pick the male / female value; sex "O" (other) gets their mean."""
    s = (sex or "").strip().upper()
    if s == "M":
        return male
    if s == "F":
        return female
    if s == "O":
        return 0.5 * (male + female)
    raise DicomError(f"PatientSex (0010,0040) is {sex!r}; this SUV normalisation needs 'M', 'F' or 'O' — "
                     "set the sex in the header or use --kind bw")


def lbm_james(weight_kg: float, height_m: float, sex: str | None) -> float:
    """Lean body mass (kg), James 1976 (the "james128" variant)."""
    _check_body(weight_kg, height_m)
    ratio = weight_kg / (height_m * 100.0)
    return _by_sex(sex, 1.10 * weight_kg - 128.0 * ratio**2, 1.07 * weight_kg - 148.0 * ratio**2)


def lbm_janmahasatian(weight_kg: float, height_m: float, sex: str | None) -> float:
    """Lean body mass (kg), Janmahasatian et al. 2005."""
    _check_body(weight_kg, height_m)
    bmi = weight_kg / height_m**2
    return _by_sex(sex, 9270.0 * weight_kg / (6680.0 + 216.0 * bmi), 9270.0 * weight_kg / (8780.0 + 244.0 * bmi))


def bsa_dubois(weight_kg: float, height_m: float) -> float:
    """Body surface area (m²), DuBois & DuBois 1916."""
    _check_body(weight_kg, height_m)
    return 0.007184 * weight_kg**0.425 * (height_m * 100.0) ** 0.725


def ideal_body_weight(height_m: float, sex: str | None) -> float:
    """Ideal body weight (kg), Zasadny & Wahl 1993."""
    if height_m is None or not height_m > 0:
        raise DicomError(f"patient height must be > 0 m, got {height_m}; give PatientSize (0010,1020)")
    h_cm = height_m * 100.0
    return _by_sex(sex, 48.0 + 1.06 * (h_cm - 152.0), 45.5 + 0.91 * (h_cm - 152.0))


def normaliser(kind: str, weight_kg: float | None, height_m: float | None, sex: str | None) -> float:
    """The SUV denominator's body size: grams for ``bw``/``lbm-*``/``ibw``, cm² for ``bsa``."""
    if kind == "bw":
        _check_body(weight_kg, None, need_height=False)
        return weight_kg * 1000.0  # type: ignore[operator]
    if kind == "lbm-james":
        return lbm_james(weight_kg, height_m, sex) * 1000.0  # type: ignore[arg-type]
    if kind == "lbm-janma":
        return lbm_janmahasatian(weight_kg, height_m, sex) * 1000.0  # type: ignore[arg-type]
    if kind == "bsa":
        return bsa_dubois(weight_kg, height_m) * 1e4  # type: ignore[arg-type]
    if kind == "ibw":
        return ideal_body_weight(height_m, sex) * 1000.0  # type: ignore[arg-type]
    raise DicomError(f"unknown SUV kind {kind!r}; use one of {', '.join(KINDS)}")


# ------------------------------------------------------------------------------------------- header access
def _missing(name: str, what: str = "is missing") -> DicomError:
    return DicomError(f"{name} {_TAGS.get(name, '')} {what} in the PET header; SUV cannot be computed — "
                      "fix the header (e.g. with pydicom) or export the series again from the scanner")


def _number(ds: Any, name: str, required: bool = True, positive: bool = True) -> float | None:
    """A numeric header value, or DicomError naming the tag when it is missing/empty/non-positive."""
    value = ds.get(name, None)
    value = getattr(value, "value", value)
    if value is None or value == "":
        if required:
            raise _missing(name)
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _missing(name, f"holds {value!r}, not a number,") from None
    if positive and not number > 0:
        if required:
            raise _missing(name, f"is {number:g} (must be > 0)")
        return None
    return number


def _private_number(ds: Any, tag: tuple[int, int]) -> float | None:
    """A numeric private element read without its private creator (it may come as DS, text or raw bytes)."""
    if tag not in ds:
        return None
    value = ds[tag].value
    if isinstance(value, bytes):  # implicit-VR files give private elements as raw bytes
        if len(value) == 8 and not value.strip(b"0123456789.+-eE \x00"):
            value = value.decode("ascii")
        elif len(value) == 8:
            return float(np.frombuffer(value, "<f8")[0])
        else:
            value = value.decode("ascii", "ignore")
    if isinstance(value, str):
        value = value.strip("\x00 ").split("\\")[0]
    elif isinstance(value, MultiValue):
        value = value[0] if len(value) else None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("ascii", "ignore")
    return str(value).strip().strip("\x00").strip()


def parse_da(value: Any) -> date | None:
    """DICOM DA ("YYYYMMDD", old "YYYY.MM.DD") → date, or None when empty/unparseable."""
    s = _text(value).replace(".", "").replace("-", "")
    if len(s) < 8:
        return None
    try:
        return date(int(s[:4]), int(s[4:6]), int(s[6:8]))
    except ValueError:
        return None


def parse_tm(value: Any) -> time | None:
    """DICOM TM ("HHMMSS.FFFFFF", "HHMM", old "HH:MM:SS") → time, or None."""
    s = _text(value).replace(":", "")
    if len(s) < 2 or not s[:2].isdigit():
        return None
    whole, _, frac = s.partition(".")
    try:
        hh = int(whole[0:2])
        mm = int(whole[2:4]) if len(whole) >= 4 else 0
        ss = int(whole[4:6]) if len(whole) >= 6 else 0
        us = int(round(float("0." + frac) * 1e6)) if frac else 0
        return time(hh, mm, min(ss, 59), min(us, 999999))
    except ValueError:
        return None


def parse_dt(value: Any) -> datetime | None:
    """DICOM DT ("YYYYMMDDHHMMSS.FFFFFF&ZZXX") → naive local datetime (the UTC offset is dropped), or None."""
    s = _text(value)
    for sign in "+-":
        if sign in s[8:]:
            s = s[: 8 + s[8:].index(sign)]
    d = parse_da(s[:8])
    if d is None:
        return None
    t = parse_tm(s[8:]) if len(s) > 8 else time(0)
    return datetime.combine(d, t or time(0))


def _combine(da: Any, tm: Any) -> datetime | None:
    d, t = parse_da(da), parse_tm(tm)
    return datetime.combine(d, t) if d is not None and t is not None else None


def acquisition_datetime(ds: Any) -> datetime | None:
    """AcquisitionDateTime (0008,002A), else AcquisitionDate + AcquisitionTime (else SeriesDate + time)."""
    dt = parse_dt(ds.get("AcquisitionDateTime", None))
    if dt is not None:
        return dt
    return _combine(ds.get("AcquisitionDate", None) or ds.get("SeriesDate", None), ds.get("AcquisitionTime", None))


# ------------------------------------------------------------------------------------------- the conversion
@dataclass
class PetSuvInfo:
    """What the conversion used (de-identified: no dates, only durations)."""

    units: str
    decay_correction: str
    kind: str
    weight_kg: float | None
    height_m: float | None
    sex: str | None
    dose_bq: float | None
    half_life_s: float | None
    uptake_s: float | None  # injection → scan start
    scan_start_rule: str | None
    source_kind: str | None  # normalisation of GML/CM2ML data, or "bw" for the Philips SUV factor

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _patient(ds: Any) -> tuple[float | None, float | None, str | None]:
    weight = _number(ds, "PatientWeight", required=False)
    height = _number(ds, "PatientSize", required=False)
    if height is not None and height > 3.0:  # DICOM says metres; values > 3 can only be centimetres
        height /= 100.0
    sex = _text(ds.get("PatientSex", None)).upper() or None
    return weight, height, sex


def _require_body(kind: str, weight: float | None, height: float | None, sex: str | None) -> float:
    """The normaliser for ``kind``; missing header values raise DicomError naming their tag."""
    if kind != "ibw" and weight is None:
        raise _missing("PatientWeight", "is missing or zero")
    if kind != "bw" and height is None:
        raise _missing("PatientSize", "is missing or zero")
    if kind in ("lbm-james", "lbm-janma", "ibw") and not sex:
        raise _missing("PatientSex")
    return normaliser(kind, weight, height, sex)


def _radiopharmaceutical(ds: Any) -> Any:
    seq = ds.get("RadiopharmaceuticalInformationSequence", None)
    if not seq:
        raise _missing("RadiopharmaceuticalInformationSequence")
    return seq[0]


def _scan_start(headers: Sequence[Any], half_life_s: float) -> tuple[datetime, str]:
    """Scan start (the series reference time of DecayCorrection START) by the QIBA rule; see module doc."""
    first = headers[0]
    series_dt = _combine(first.get("SeriesDate", None), first.get("SeriesTime", None))
    acq = [(acquisition_datetime(h), h) for h in headers]
    acq = [(t, h) for t, h in acq if t is not None]
    if series_dt is not None and (not acq or series_dt <= min(t for t, _ in acq)):
        return series_dt, "SeriesDate/Time"
    ge = parse_dt(_private_text(first, _GE_SCAN_DATETIME))
    if ge is not None:
        return ge, "GE private scan datetime (0009,100D)"
    if not acq:
        raise _missing("SeriesTime", "and AcquisitionTime (0008,0032) are missing")
    earliest, h = min(acq, key=lambda item: item[0])
    frame_ref_ms = _number(h, "FrameReferenceTime", required=False)
    duration_ms = _number(h, "ActualFrameDuration", required=False)
    if frame_ref_ms and duration_ms:
        lam = math.log(2.0) / half_life_s
        lam_t = lam * duration_ms / 1000.0
        mean_count_s = math.log(lam_t / (1.0 - math.exp(-lam_t))) / lam  # decay-weighted mean time in frame
        start = earliest + timedelta(seconds=mean_count_s - frame_ref_ms / 1000.0)
        if start <= earliest:
            return start, "earliest acquisition start corrected by FrameReferenceTime"
    return earliest, "earliest AcquisitionDate/Time"


def _private_text(ds: Any, tag: tuple[int, int]) -> str:
    return _text(ds[tag].value) if tag in ds else ""


def _injection(rp: Any, scan: datetime) -> datetime:
    """Injection datetime; with only a time, on the scan date (the day before when that is after the scan)."""
    dt = parse_dt(rp.get("RadiopharmaceuticalStartDateTime", None))
    if dt is not None:
        return dt
    t = parse_tm(rp.get("RadiopharmaceuticalStartTime", None))
    if t is None:
        raise DicomError(
            "RadiopharmaceuticalStartDateTime (0018,1078) and RadiopharmaceuticalStartTime (0018,1072) are both "
            "missing in the PET header; SUV cannot be decay-corrected — add the injection time to the header")
    inj = datetime.combine(scan.date(), t)
    if inj > scan:  # injected before midnight, scanned after
        inj -= timedelta(days=1)
    return inj


def _dose_bq(rp: Any) -> float:
    dose = _number(rp, "RadionuclideTotalDose")
    return dose * 1e6 if dose < _MBQ_BELOW else dose  # type: ignore[operator]


def suv_factors(headers: Sequence[Any], kind: str = "bw") -> tuple[np.ndarray, PetSuvInfo]:
    """Per-slice factors turning rescaled PET pixel values into SUV of normalisation ``kind``.

    Args:
        headers: pydicom datasets of one PET series, sorted in slice order (pixel data not needed).
        kind: one of :data:`KINDS`.

    Returns:
        ``(factors, info)``: float64 array ``(n_slices,)`` (units: SUV per rescaled pixel unit) and what was used.

    Raises:
        DicomError: unknown units / decay correction, or a required tag missing or zero (the message names it).
    """
    if kind not in KINDS:
        raise DicomError(f"unknown SUV kind {kind!r}; use one of {', '.join(KINDS)}")
    if not headers:
        raise DicomError("no PET slices were given; point unipet at a folder holding a PET series")
    first = headers[0]
    units = _text(first.get("Units", None)).upper()
    decay = _text(first.get("DecayCorrection", None)).upper()
    weight, height, sex = _patient(first)
    n = len(headers)
    info = PetSuvInfo(units=units, decay_correction=decay, kind=kind, weight_kg=weight, height_m=height, sex=sex,
                      dose_bq=None, half_life_s=None, uptake_s=None, scan_start_rule=None, source_kind=None)

    if units in ("GML", "CM2ML"):
        suv_type = _text(first.get("SUVType", None)).upper()
        source = "bsa" if units == "CM2ML" else _SUV_TYPE_TO_KIND.get(suv_type or "BW")
        if source is None or (units == "GML") == (source == "bsa"):
            raise DicomError(f"PET Units {units} with SUVType (0054,1006) {suv_type!r} is inconsistent; fix the "
                             "SUVType or Units in the header")
        info.source_kind = source
        if source == kind:
            return np.ones(n), info
        factor = _require_body(kind, weight, height, sex) / _require_body(source, weight, height, sex)
        return np.full(n, factor), info

    philips_suv = _private_number(first, _PHILIPS_SUV_FACTOR) if units == "CNTS" else None
    if philips_suv is not None and philips_suv > 0:
        info.source_kind = "bw"
        factor = philips_suv
        if kind != "bw":
            factor *= _require_body(kind, weight, height, sex) / _require_body("bw", weight, height, sex)
        return np.full(n, factor), info

    activity_scale = 1.0
    if units == "CNTS":
        scale = _private_number(first, _PHILIPS_ACTIVITY_FACTOR)
        if scale is None or not scale > 0:
            raise DicomError(
                "PET Units are CNTS but neither the Philips SUV scale factor (7053,1000) nor the activity "
                "concentration scale factor (7053,1009) is present; export the series in BQML from the scanner")
        activity_scale = scale
    elif units != "BQML":
        raise DicomError(f"PET Units (0054,1001) {units or 'missing'!r} cannot be converted to SUV; unipet reads "
                         "BQML, CNTS (Philips), GML and CM2ML — export the series in Bq/mL")

    body = _require_body(kind, weight, height, sex)
    rp = _radiopharmaceutical(first)
    dose = _dose_bq(rp)
    half_life = _number(rp, "RadionuclideHalfLife")
    lam = math.log(2.0) / half_life  # type: ignore[operator]
    info.dose_bq, info.half_life_s = dose, half_life

    if decay == "ADMIN":  # already corrected to the injection: no times needed (uptake reported when known)
        try:
            scan, rule = _scan_start(headers, half_life)  # type: ignore[arg-type]
            info.uptake_s, info.scan_start_rule = (scan - _injection(rp, scan)).total_seconds(), rule
        except DicomError:
            pass
        return np.full(n, activity_scale * body / dose), info
    if decay == "START":
        scan, rule = _scan_start(headers, half_life)  # type: ignore[arg-type]
        uptake = (scan - _injection(rp, scan)).total_seconds()
        _check_uptake(uptake)
        info.uptake_s, info.scan_start_rule = uptake, rule
        return np.full(n, activity_scale * body / (dose * math.exp(-lam * uptake))), info
    if decay == "NONE":
        return _factors_not_decay_corrected(headers, rp, lam, activity_scale * body / dose, info)
    raise DicomError(f"DecayCorrection (0054,1102) {decay or 'missing'!r} is not START, ADMIN or NONE; fix the "
                     "header or export the series again")


def _check_uptake(uptake_s: float) -> None:
    if uptake_s < 0:
        raise DicomError(f"the injection is {-uptake_s:.0f} s after the scan start; the radiopharmaceutical start "
                         "date/time (0018,1078)/(0018,1072) or the series time in the header is wrong")


def _factors_not_decay_corrected(headers, rp, lam: float, base: float, info: PetSuvInfo) -> tuple[np.ndarray, PetSuvInfo]:
    """DecayCorrection NONE: correct each slice from its acquisition start (frame-averaged) back to injection."""
    factors = np.empty(len(headers))
    uptakes = []
    for i, h in enumerate(headers):
        acq = acquisition_datetime(h)
        if acq is None:
            raise _missing("AcquisitionTime", "is missing on a slice")
        duration_ms = _number(h, "ActualFrameDuration")
        lam_t = lam * duration_ms / 1000.0  # type: ignore[operator]
        uptake = (acq - _injection(rp, acq)).total_seconds()
        _check_uptake(uptake)
        uptakes.append(uptake)
        factors[i] = base * math.exp(lam * uptake) * lam_t / (1.0 - math.exp(-lam_t))
    info.uptake_s, info.scan_start_rule = min(uptakes), "per-slice AcquisitionDate/Time (DecayCorrection NONE)"
    return factors, info
