"""The unipet report: one self-contained HTML file per cohort (metrics, MIPs, agreement, survival).

``build_report`` assembles it from whatever the pipeline produced; ``unipet.report.plots`` holds the figures.
"""
from unipet.report.html import build_report

__all__ = ["build_report"]
