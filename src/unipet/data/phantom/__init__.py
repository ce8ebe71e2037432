"""The synthetic whole-body FDG PET/CT phantom: studies and cohorts with known truth (lesions, organs, survival).

- ``cohort``: ``generate_study`` (one patient from a seed) and ``write_phantom_cohort`` (autoPET layout +
  ``clinical.csv``);
- ``anatomy``: organs and tissues head to thigh; ``lesions``: each cancer type's lesions; ``imaging``: PET in SUV
  and CT in HU; ``clinical``: subjects and simulated outcomes; ``geometry``: grids, shapes and smooth fields;
  ``spectrum``: the default or the opt-in wide lesion and imaging spectrum.
"""
from unipet.data.phantom.cohort import CLINICAL_COLUMNS, PhantomStudy, generate_study, write_phantom_cohort

__all__ = ["CLINICAL_COLUMNS", "PhantomStudy", "generate_study", "write_phantom_cohort"]
