"""Readers and writers: NIfTI, DICOM (with QIBA SUV), dataset layouts (autoPET, nnU-Net raw, manifests), DICOM-SEG."""
