"""PET quantification: connected components (shared by evaluation, biomarkers and the predictor),
SUVpeak, and lesion / patient biomarkers behind ``unipet quantify``."""
from unipet.quantify.biomarkers import (QuantifyConfig, delineate, lesion_table, liver_reference, patient_summary,
                                        quantify_files, quantify_manifest, quantify_study)
from unipet.components import Component, component_stats, components, label_components
from unipet.quantify.suvpeak import SuvPeaks, sphere_kernel, suv_peak_ibsi, suv_peak_percist, suv_peaks

__all__ = [
    "Component", "QuantifyConfig", "SuvPeaks", "component_stats", "components", "delineate", "label_components",
    "lesion_table", "liver_reference", "patient_summary", "quantify_files", "quantify_manifest", "quantify_study",
    "sphere_kernel", "suv_peak_ibsi", "suv_peak_percist", "suv_peaks",
]
