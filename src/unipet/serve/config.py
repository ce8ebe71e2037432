"""Settings of the DICOM node: who it is, whom it accepts, where results go, how it segments.

Defaults are unipet's choices: loopback only (``127.0.0.1``; a node reachable from the network is a decision the
user states with ``host``), a 30 s stable-study timeout (PACS routers such as Orthanc's stable-study event use
60 s by default; 30 s suits a direct push), and the model shipped with unipet.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from unipet.errors import ConfigError

_AE_RE = re.compile(r"^[\x20-\x7e]{1,16}$")


@dataclass(frozen=True)
class Destination:
    """A DICOM peer receiving the results by C-STORE (e.g. the PACS the studies came from)."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> "Destination":
        """``AE@host:port`` → Destination (e.g. ``ORTHANC@127.0.0.1:4242``)."""
        match = re.fullmatch(r"([^@]{1,16})@([^:]+):(\d+)", text.strip())
        if not match:
            raise ConfigError(f"destination {text!r} is not AE@host:port (e.g. ORTHANC@127.0.0.1:4242)")
        return cls(match.group(1), match.group(2), int(match.group(3)))

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class NodeConfig:
    """Everything ``unipet serve`` needs.

    Attributes:
        work_dir: folder of the queue (``queue.sqlite``), received instances (``incoming/<study>/``), results
            (``results/<study>/``) and ``node.log``; studies are named by a pseudonym of the StudyInstanceUID.
        ae_title: the node's own AE title.
        host, port: where the C-STORE SCP listens; ``127.0.0.1`` unless told otherwise.
        allowed_aes: calling AE titles accepted (associations from others are rejected); at least one.
        destination: peer receiving SEG/SR/RTSTRUCT by C-STORE; None keeps results in ``work_dir/results``.
        stable_s: seconds without a new instance before a study counts as complete.
        checkpoint: run or checkpoint folder; None = the model shipped with unipet.
        task: task of every study (None = the model infers it, as ``unipet.segment``).
        device: ``auto``, ``cpu`` or ``cuda``.
        rtstruct: also send an RT Structure Set; ``per_lesion_rois``: one ROI per lesion (else one for all).
        retry_s: wait before sending again after the destination refused or was unreachable.
        max_crashes: a study during whose processing the node died this many times is failed, not retried.
        poll_s: how often the loop looks for stable studies.
    """

    work_dir: Path
    ae_title: str = "UNIPET"
    host: str = "127.0.0.1"
    port: int = 11112
    allowed_aes: tuple[str, ...] = ()
    destination: Destination | None = None
    stable_s: float = 30.0
    checkpoint: str | None = None
    task: str | None = None
    device: str = "auto"
    rtstruct: bool = False
    per_lesion_rois: bool = True
    retry_s: float = 60.0
    max_crashes: int = 2
    poll_s: float = 0.5
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "work_dir", Path(self.work_dir))
        object.__setattr__(self, "allowed_aes", tuple(a.strip() for a in self.allowed_aes if a.strip()))
        if isinstance(self.destination, str):
            object.__setattr__(self, "destination", Destination.parse(self.destination))
        elif isinstance(self.destination, dict):
            object.__setattr__(self, "destination", Destination(**self.destination))
        for ae in (self.ae_title, *self.allowed_aes, *([self.destination.ae_title] if self.destination else [])):
            if not _AE_RE.match(ae):
                raise ConfigError(f"AE title {ae!r} must be 1-16 printable ASCII characters")
        if not self.allowed_aes:
            raise ConfigError("the node accepts no calling AE title; name the PACS that sends studies with "
                              "--allow AE (repeatable), e.g. --allow ORTHANC")
        if not 0 < int(self.port) < 65536:
            raise ConfigError(f"port {self.port} is not a TCP port (1-65535)")
        if self.stable_s < 0 or self.retry_s < 0 or self.poll_s <= 0:
            raise ConfigError("stable_s and retry_s must be >= 0 and poll_s > 0 seconds")

    @classmethod
    def from_json(cls, data: dict[str, Any], **overrides: Any) -> "NodeConfig":
        """A config from a JSON object (keys = the attributes; ``destination`` as ``AE@host:port``) with
        ``overrides`` (None values ignored) on top."""
        known = {f.name for f in fields(cls)} - {"extra"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown node setting(s) {unknown}; known: {sorted(known)}")
        merged = {**data, **{k: v for k, v in overrides.items() if v is not None}}
        if "work_dir" not in merged:
            raise ConfigError("the node needs a work folder: --work-dir DIR (or \"work_dir\" in the config)")
        merged["allowed_aes"] = tuple(merged.get("allowed_aes") or ())
        return cls(**merged)

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "extra"}
        out["work_dir"] = str(self.work_dir)
        out["allowed_aes"] = list(self.allowed_aes)
        out["destination"] = str(self.destination) if self.destination else None
        return out
