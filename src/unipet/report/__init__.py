"""What people look at: the cohort report and the per-study viewer pages.

``build_report`` writes one self-contained, curated HTML report (the headline per cancer type first; details
collapsed and in CSV/JSON beside it); ``unipet.report.viewer`` writes interactive NiiVue PET/CT pages;
``unipet.report.plots`` holds the figures, ``unipet.report.headline`` the headline table and
``unipet.report.page`` the HTML building blocks.
"""
from unipet.report.html import build_report

__all__ = ["build_report"]
