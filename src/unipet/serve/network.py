"""DICOM networking of the node, with pynetdicom.

Why a C-STORE SCP (pynetdicom) rather than polling a PACS over DICOMweb: every PACS, modality and router can
C-STORE to a configured AE (Orthanc, dcm4chee, commercial PACS routing rules), while DICOMweb (QIDO/WADO/STOW)
is optional in many clinical PACS and polling needs credentials and a query schedule; a push node is also what
MONAI Deploy's informatics gateway and PACS AI routers expose. pynetdicom is the maintained pure-Python DICOM
network stack (pydicom's sister project), so no native toolkit is needed. Results go back by C-STORE (SCU) for
the same reason.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Callable

from unipet.errors import UnipetError

log = logging.getLogger("unipet.serve")

#: what the node keeps of what it receives: the images it segments (other objects are acknowledged, not stored)
IMAGE_MODALITIES = ("PT", "CT")
_UID_RE = re.compile(r"^[0-9.]{1,64}$")
_SUCCESS, _FAILURE = 0x0000, 0xC211


class SendError(UnipetError):
    """The destination could not be reached or refused an object."""


def _pynetdicom():
    """The pynetdicom module, quietened: it logs association details at INFO/DEBUG; the node logs its own lines
    (no patient data) instead."""
    try:
        import pynetdicom
    except ImportError:
        raise UnipetError("the DICOM node needs pynetdicom; install it with `pip install \"unipet[dicom-node]\"`"
                          ) from None
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    return pynetdicom


def start_scp(ae_title: str, host: str, port: int, allowed_aes: tuple[str, ...],
              on_instance: Callable[[object], None]):
    """Start the C-STORE (+ C-ECHO) SCP in background threads; returns the pynetdicom server (``.shutdown()``).

    ``on_instance(dataset)`` gets each received dataset (with ``file_meta``); associations from calling AE titles
    not in ``allowed_aes`` are rejected by pynetdicom (``require_calling_aet``).
    """
    _pynetdicom()
    from pynetdicom import AE, AllStoragePresentationContexts, evt
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title=ae_title)
    ae.supported_contexts = AllStoragePresentationContexts
    ae.add_supported_context(Verification)
    ae.require_calling_aet = list(allowed_aes)
    ae.maximum_pdu_size = 0

    def handle_store(event) -> int:
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
            on_instance(ds)
            return _SUCCESS
        except Exception as exc:  # a bad instance must not stop the node; the sender gets a failure status
            log.error("could not store a received instance: %s", type(exc).__name__)
            return _FAILURE

    def handle_rejected(event) -> None:
        log.warning("association rejected (calling AE not in the allow-list)")

    handlers = [(evt.EVT_C_STORE, handle_store), (evt.EVT_C_ECHO, lambda event: _SUCCESS),
                (evt.EVT_REJECTED, handle_rejected)]
    try:
        return ae.start_server((host, int(port)), block=False, evt_handlers=handlers)
    except OSError as exc:
        raise UnipetError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port or stop "
                          "the program using it") from None


def safe_uid(uid: str) -> str:
    """``uid`` when it is a well-formed DICOM UID (digits and dots), for use as a file name; else an error."""
    uid = str(uid).strip().rstrip("\x00")
    if not _UID_RE.match(uid):
        raise ValueError("malformed UID")
    return uid


def send_files(files: list[tuple[str, Path]], ae_title: str, host: str, port: int, dest_ae: str,
               on_sent: Callable[[str, str], None]) -> None:
    """C-STORE ``(name, path)`` files to ``dest_ae@host:port`` in one association; ``on_sent(name, sop_uid)``
    after each confirmed store.

    Raises:
        SendError: no association, or the peer answered a failure status.
    """
    import pydicom
    _pynetdicom()
    from pynetdicom import AE
    from pynetdicom.sop_class import Comprehensive3DSRStorage, RTStructureSetStorage, SegmentationStorage
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    if not files:
        return
    ae = AE(ae_title=ae_title)
    for context in (SegmentationStorage, Comprehensive3DSRStorage, RTStructureSetStorage):
        ae.add_requested_context(context, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate(host, int(port), ae_title=dest_ae)
    if not assoc.is_established:
        raise SendError(f"cannot associate with {dest_ae}@{host}:{port} (unreachable or refused)")
    try:
        for name, path in files:
            ds = pydicom.dcmread(path)
            status = assoc.send_c_store(ds)
            code = int(status.Status) if status is not None and "Status" in status else None
            if code is None or code not in (0x0000, 0xB000, 0xB007, 0xB006):
                raise SendError(f"{dest_ae} answered {('0x%04X' % code) if code is not None else 'nothing'} to the "
                                f"{name.upper()} object")
            on_sent(name, str(ds.SOPInstanceUID))
    finally:
        assoc.release()
