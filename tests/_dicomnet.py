"""Test helpers for the DICOM node: free ports, a C-STORE sender, a C-STORE sink, copies of real studies."""
from __future__ import annotations

import socket
import threading
from pathlib import Path

import pydicom


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def push(paths, port: int, calling_ae: str = "ORTHANC", called_ae: str = "UNIPET") -> list[int]:
    """C-STORE the files ``paths`` to ``called_ae@127.0.0.1:port``; returns the status codes (empty: rejected)."""
    from pynetdicom import AE
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    datasets = [pydicom.dcmread(p) for p in paths]
    ae = AE(ae_title=calling_ae)
    for sop in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(sop, [ImplicitVRLittleEndian, ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title=called_ae)
    if not assoc.is_established:
        return []
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


class Sink:
    """A C-STORE SCP on a free loopback port that keeps what it receives (a stand-in PACS for results)."""

    def __init__(self, ae_title: str = "SINK"):
        from pynetdicom import AE, AllStoragePresentationContexts, evt

        self.ae_title, self.port = ae_title, free_port()
        self.received: list[pydicom.Dataset] = []
        self._lock = threading.Lock()
        ae = AE(ae_title=ae_title)
        ae.supported_contexts = AllStoragePresentationContexts

        def on_store(event):
            ds = event.dataset
            ds.file_meta = event.file_meta
            with self._lock:
                self.received.append(ds)
            return 0x0000

        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])

    def close(self) -> None:
        self.server.shutdown()


def copy_study(src: Path, dest: Path, keep=lambda path, ds: True, edit=lambda ds: None) -> Path:
    """Copy the DICOM files under ``src`` that ``keep`` accepts into ``dest``, as a new study (new Study, Series
    and SOP Instance UIDs, mapped consistently), after ``edit(ds)``."""
    from pydicom.uid import generate_uid

    dest.mkdir(parents=True, exist_ok=True)
    uid_map: dict[str, str] = {}

    def new(uid: str) -> str:
        return uid_map.setdefault(str(uid), generate_uid())

    for path in sorted(p for p in Path(src).rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        if not keep(path, ds):
            continue
        ds.StudyInstanceUID = new(ds.StudyInstanceUID)
        ds.SeriesInstanceUID = new(ds.SeriesInstanceUID)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = new(ds.SOPInstanceUID)
        edit(ds)
        ds.save_as(dest / f"{path.parent.parent.name}_{path.name}")
    return dest
