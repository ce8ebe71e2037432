"""PET quantification: SUVpeak, lesion / patient biomarkers (``biomarkers``, the measures) and the runner behind
``unipet quantify`` (``runner``); survival statistics (``survival``). Connected components live in
``unipet.components`` (shared by data, evaluation, quantification and the predictor) and are re-exported here."""
from unipet.components import Component, component_stats, components, label_components
from unipet.quantify.biomarkers import (QuantifyConfig, delineate, lesion_table, liver_reference, patient_summary,
                                        quantify_study)
from unipet.quantify.runner import quantify_files, quantify_manifest
from unipet.quantify.suvpeak import SuvPeaks, sphere_kernel, suv_peak_ibsi, suv_peak_percist, suv_peaks

__all__ = [
    "Component", "QuantifyConfig", "SuvPeaks", "component_stats", "components", "delineate", "label_components",
    "lesion_table", "liver_reference", "patient_summary", "quantify_files", "quantify_manifest", "quantify_study",
    "sphere_kernel", "suv_peak_ibsi", "suv_peak_percist", "suv_peaks",
]
