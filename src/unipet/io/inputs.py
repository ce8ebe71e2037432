"""What an input path is, decided from file names alone (no image is read, no heavy import): the first step of
``unipet predict`` and ``unipet.segment``, so that a wrong path or layout is reported in well under a second.

Accepted inputs (``resolve_input``), in the order they are recognised:

- ``pet=`` / ``ct=`` (``--pet`` / ``--ct``): one study as a pair of NIfTI files (PET in SUV, CT in HU);
- a manifest JSON (``unipet import`` writes one);
- an nnU-Net raw folder (``dataset.json``);
- one autoPET **study** folder (``SUV.nii.gz`` + ``CTres.nii.gz`` inside, ``SEG.nii.gz`` optional), one
  **patient** folder (``<study>/SUV.nii.gz``), or an autoPET **root** (``<patient>/<study>/SUV.nii.gz``);
- a DICOM folder (one study or a tree of them; recognised by the ``DICM`` marker of a file).

A folder that holds the CT file of a study but not its PET (or the reverse) is diagnosed as such, naming the
missing file, rather than being taken for an empty DICOM folder.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from unipet.errors import InputFileError

#: file names of an autoPET study's PET (SUV first; PET.nii.gz is Bq/mL and needs dose, weight and delay)
PET_NAMES = ("SUV.nii.gz", "PET.nii.gz")
#: file names of an autoPET study's CT (CTres on the PET grid first)
CT_NAMES = ("CTres.nii.gz", "CT.nii.gz")
NIFTI_ENDINGS = (".nii.gz", ".nii")
#: files looked at (at most) for a DICOM marker before a folder is declared to hold no DICOM
DICOM_PROBE_FILES = 2000
LAYOUTS = ("a pair of files (--pet/--ct; pet=, ct=), one autoPET study folder (SUV.nii.gz + CTres.nii.gz), "
           "a patient or autoPET root folder, an nnU-Net raw folder (dataset.json), a manifest JSON, or DICOM")


@dataclass(frozen=True)
class InputSpec:
    """A recognised input.

    Attributes:
        kind: ``"pair"``, ``"manifest"``, ``"nnunet"``, ``"study"`` (one autoPET study folder), ``"patient"``
            (a folder of a patient's study folders), ``"autopet"`` (an autoPET root) or ``"dicom"``.
        path: the folder or manifest (for ``"pair"``: None).
        pet, ct: the two files of a ``"pair"`` (``ct`` may be None for a PET-only model).
    """

    kind: str
    path: Path | None
    pet: Path | None = None
    ct: Path | None = None

    @property
    def single_study(self) -> bool:
        """True when the input holds exactly one study by construction (a pair or a study folder)."""
        return self.kind in ("pair", "study")


def resolve_input(source: str | Path | None = None, pet: str | Path | None = None,
                  ct: str | Path | None = None) -> InputSpec:
    """Recognise an input (see the module docstring) from its file names.

    Args:
        source: a folder or a manifest JSON; None when ``pet`` (and ``ct``) are given.
        pet, ct: NIfTI files of one study (PET in SUV, CT in HU); not together with ``source``.

    Raises:
        InputFileError: nothing at the path, both or neither of ``source`` / ``pet`` given, a lone NIfTI file,
            a study folder whose PET (or CT) is missing, or a folder holding none of the layouts above.
    """
    if pet is not None or ct is not None:
        if source is not None:
            raise InputFileError(f"give either an input ({source}) or --pet/--ct files, not both")
        if pet is None:
            raise InputFileError(f"--ct {ct} was given without --pet; unipet segments PET/CT: give the PET (SUV) "
                                 "file with --pet")
        for what, p in (("PET", pet), ("CT", ct)):
            if p is not None:
                _check_nifti_file(Path(p), what)
        return InputSpec("pair", None, Path(pet), None if ct is None else Path(ct))
    if source is None:
        raise InputFileError(f"no input given; give {LAYOUTS}")
    path = Path(source)
    if not path.exists():
        raise InputFileError(f"input {path} does not exist; check the path (unipet reads {LAYOUTS})")
    if path.is_file():
        if path.name.endswith(NIFTI_ENDINGS):
            raise InputFileError(f"input {path} is a single NIfTI file; give its study folder, or the PET and CT "
                                 "files as a pair (--pet PET --ct CT; in Python pet=, ct=)")
        if path.suffix != ".json":
            raise InputFileError(f"input {path} is a file but not a manifest JSON; give {LAYOUTS}")
        return InputSpec("manifest", path)
    if (path / "dataset.json").exists():
        return InputSpec("nnunet", path)
    kind, _ = find_study_dirs(path)
    if kind is not None:
        return InputSpec(kind, path)
    # a study folder (or several) with only one of the two images: say which one is missing
    for pattern in ("", "*/", "*/*/"):
        for name in CT_NAMES:
            hit = next(iter(path.glob(pattern + name)), None)
            if hit is not None:
                check_study_folder(hit.parent)
    if _holds_dicom(path):
        return InputSpec("dicom", path)
    niftis = [p.name for p in path.iterdir() if p.name.endswith(NIFTI_ENDINGS)][:5]
    found = f" (it holds {', '.join(niftis)}, none named {' or '.join(PET_NAMES)})" if niftis else ""
    raise InputFileError(f"no PET/CT study found in {path}{found}; give {LAYOUTS}")


#: autoPET layouts by depth: a study folder, a patient folder, an autoPET root
AUTOPET_DEPTHS = (("study", ""), ("patient", "*/"), ("autopet", "*/*/"))


def find_study_dirs(folder: Path) -> tuple[str | None, list[Path]]:
    """``(kind, study folders)`` of the shallowest autoPET layout (``AUTOPET_DEPTHS``) with a PET file under
    ``folder``, every study folder at that depth checked by ``check_study_folder``; ``(None, [])`` when none."""
    for kind, pattern in AUTOPET_DEPTHS:
        pets = sorted({p.parent for name in PET_NAMES for p in folder.glob(pattern + name)})
        if pets:
            for study in sorted({p.parent for name in PET_NAMES + CT_NAMES for p in folder.glob(pattern + name)}):
                check_study_folder(study)
            return kind, pets
    return None, []


def check_study_folder(folder: Path) -> None:
    """Refuse an autoPET study folder whose PET or CT file is missing, naming the one that is."""
    pet = next((folder / n for n in PET_NAMES if (folder / n).exists()), None)
    ct = next((folder / n for n in CT_NAMES if (folder / n).exists()), None)
    if pet is None and ct is not None:
        raise InputFileError(f"the PET is missing in {folder}: it has {ct.name} but no {' or '.join(PET_NAMES)}; "
                             "put the study's PET (in SUV) beside the CT as SUV.nii.gz, or give the files with "
                             "--pet/--ct")
    if pet is not None and ct is None:
        raise InputFileError(f"the CT is missing in {folder}: it has {pet.name} but no {' or '.join(CT_NAMES)}; "
                             "put the study's CT (in HU) beside the PET as CTres.nii.gz, or give the files with "
                             "--pet/--ct")


def _check_nifti_file(path: Path, what: str) -> None:
    if not path.exists():
        raise InputFileError(f"{what} file {path} does not exist; check the path")
    if not path.is_file() or not path.name.endswith(NIFTI_ENDINGS):
        raise InputFileError(f"{what} path {path} is not a NIfTI file (.nii.gz or .nii)")


def _holds_dicom(folder: Path) -> bool:
    """True when one of the first ``DICOM_PROBE_FILES`` files under ``folder`` carries the DICOM marker
    (``DICM`` at byte 128)."""
    for i, p in enumerate(f for f in folder.rglob("*") if f.is_file() and not f.name.startswith(".")):
        if i >= DICOM_PROBE_FILES:
            return False
        try:
            with p.open("rb") as fh:
                fh.seek(128)
                if fh.read(4) == b"DICM":
                    return True
        except OSError:
            continue
    return False
