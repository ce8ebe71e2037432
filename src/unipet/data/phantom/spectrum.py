"""How wide the phantom's lesion and imaging spectrum is: the default (every cohort made so far) or ``wide``.

The default spectrum is what every earlier cohort, cache and benchmark number was made with; a ``Spectrum``
with every option off generates exactly those arrays (the new draws come from a stream of their own, so even
the ``wide`` spectrum keeps a study's anatomy, physiology, noise and plan and only adds to them). The ``wide``
spectrum adds the real FDG findings that the default lacks (issue 24, part 3), each for a cited reason:

- ``bulky``: the probability that a patient's largest lesion becomes a large heterogeneous mass of modest SUV
  with a wide necrotic, low-uptake centre (diameter 50-120 mm, peak SUV 3-9 and at most the lesion's own, necrotic
  core 50-85 % of the radius, stronger texture). Real FDG tumours of this kind — sarcomas, bulky lymphoma, necrotic nodal and lung masses —
  are heterogeneous with cold necrotic centres and are contoured as the whole mass (Eary et al., J Nucl Med
  49:1973, 2008, spatial heterogeneity of sarcoma FDG uptake; Folpe et al., Clin Cancer Res 6:1279, 2000; the
  35 real sarcomas of ``../shared/real_sts_fdg``: MTV 17 mL to 2.3 L, many with SUVmean below half of SUVmax).
- ``muscle``: the probability of a skeletal-muscle / soft-tissue metastasis (10-45 mm, peak SUV 3-12) anywhere in
  the muscle of the body, thighs included — the limbs carry no lesion in the default phantom; muscle metastases
  are found on FDG PET/CT mostly from lung cancer and melanoma (Surov et al., Eur Radiol 20:649, 2010).
- ``head_neck``: physiological uptake of the head and neck that mimics disease at its real range: palatine
  tonsils and salivary glands up to SUV 7 (default 4.5), and the vocal cords (speech during the uptake period)
  in a third of patients at SUV 2-6 (Nakamoto et al., Radiology 234:879, 2005; Kostakoglu et al., J Nucl Med
  37:1771, 1996).
- ``scanner``: a wider range of scanners: PSF 4-9 mm FWHM (default 5-7; from digital PET/CT to older BGO
  systems such as the GE Discovery ST of the real sarcomas) and a noise level 0.7-1.8 x the default's
  (EANM/EARL accreditation spans such reconstructions: Kaalep et al., EJNMMI 45:412, 2018).
- ``partial_fov``: the probability that a study is a partial field of view, a box 30-80 mm around one lesion
  (around a random body point in a lesion-free study), as real crops around a tumour are (the real sarcomas
  are ~5 cm crops; issue 24 part 2 measured the partial field of view as the largest single cost).
- ``sarcoma``: allows the ``soft_tissue_sarcoma`` type (a limb or trunk-wall soft-tissue sarcoma, see
  ``unipet.data.phantom.lesions``); it is generated only when asked for by name — the default 4-type task mix of
  a cohort is unchanged.

Which to use is unipet's choice: ``default`` stays the default so that every cohort, cache and number stays
reproducible; ``wide`` is opt-in (``unipet phantom --spectrum wide``, ``write_phantom_cohort(spectrum="wide")``);
``wide-body`` is ``wide`` without partial fields of view (for held-out benchmarks whose organ-map baselines need
the whole body: a crop has no liver for PERCIST).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unipet.errors import ConfigError

SARCOMA = "soft_tissue_sarcoma"


@dataclass(frozen=True)
class Spectrum:
    """Options of the phantom's spectrum (see the module docstring); all off = the default phantom."""

    bulky: float = 0.0
    muscle: float = 0.0
    head_neck: bool = False
    scanner: bool = False
    partial_fov: float = 0.0
    sarcoma: bool = False
    name: str = "default"

    @property
    def is_default(self) -> bool:
        return self == SPECTRA["default"]


SPECTRA: dict[str, Spectrum] = {
    "default": Spectrum(),
    "wide": Spectrum(bulky=0.2, muscle=0.15, head_neck=True, scanner=True, partial_fov=0.15, sarcoma=True,
                     name="wide"),
    # the wide spectrum without partial fields of view: every study whole-body (a held-out benchmark whose
    # thresholds and organ-map baselines see the whole body, as the default one does)
    "wide-body": Spectrum(bulky=0.2, muscle=0.15, head_neck=True, scanner=True, partial_fov=0.0, sarcoma=True,
                          name="wide-body"),
}


def get_spectrum(spectrum: str | Spectrum | None) -> Spectrum:
    """A ``Spectrum`` from its name (``default``, ``wide``), itself, or None (the default)."""
    if spectrum is None:
        return SPECTRA["default"]
    if isinstance(spectrum, Spectrum):
        return spectrum
    if spectrum not in SPECTRA:
        raise ConfigError(f"unknown phantom spectrum {spectrum!r}; use one of {', '.join(SPECTRA)}")
    return SPECTRA[spectrum]


def spectrum_rng(seed: int, visit: int | None = None) -> np.random.Generator:
    """A stream of the spectrum's draws, apart from every default stream (so the default stays as it was): the
    patient's (``visit=None``: lesion plan, shared by a baseline and its follow-up) or one scan's."""
    key = 200 if visit is None else 300 + int(visit)
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(key,)))
