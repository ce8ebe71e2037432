"""unipet's version (layer 0: writers of DICOM objects and report pages record it without importing the package
root, which sits above them)."""
__version__ = "0.1.0"
