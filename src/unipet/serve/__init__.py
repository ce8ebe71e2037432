"""The DICOM node (``unipet serve``): receive PET/CT studies by C-STORE, wait until each is complete, segment it,
send SEG + SR (+ RTSTRUCT) back by C-STORE; an SQLite work queue on disk makes it survive restarts.

Modules: ``config`` (the node's settings), ``queue`` (the on-disk work queue), ``pipeline`` (one study: checks,
segmentation, result objects), ``network`` (the pynetdicom SCP and SCU), ``node`` (the loop tying them together).
"""
from unipet.serve.config import NodeConfig
from unipet.serve.node import DicomNode

__all__ = ["DicomNode", "NodeConfig"]
