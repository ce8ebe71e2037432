"""Interactive PET/CT viewer pages: one HTML file per study, opened from disk with no server.

The page shows the CT (grey), the PET fused over it (SUV colour map, adjustable window and opacity), and the
reference (blue) and predicted (vermillion) masks as overlays that can be switched on and off, in three planes
with a 3-D volume render, or one plane / the render alone — drawn by NiiVue (WebGL2; vendored in
``unipet/resources/niivue``, BSD-2-Clause, its version in ``VERSION`` there). A coronal/sagittal PET MIP with
both outlines (``unipet.report.plots.mip_figure``) sits beside it.

Volumes are embedded as base64 gzip NIfTI. To keep a page within ``max_mb`` (default
:data:`MAX_PAGE_MB` = 30 MB) they are cropped to the body (PET > 0.05 SUV or CT > −500 HU, plus a 2-voxel margin)
and, if still too large, downsampled by an integer factor per axis (block mean for PET and CT, block maximum for
the masks, so a one-voxel lesion stays visible); the page states the factor. The bound is guaranteed before
encoding: raw bytes × 4/3 (base64) + the script ≤ the limit (gzip only shrinks the NIfTI payload).

The page reports its state in ``#status`` (``loading`` → ``ready`` or ``error: ...``) and accepts query
parameters that set the controls on load the way a click would: ``?hide=ref,pred,pet,ct`` and
``?layout=multi|axial|coronal|sagittal|render`` (used by the browser tests).
"""
from __future__ import annotations

import base64
import gzip
import html
import json
import logging
import math
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from unipet.errors import ConfigError, ImageGeometryError, InputFileError
from unipet.fileio import atomic_write_text, check_writable, ensure_folder, inside

log = logging.getLogger("unipet")

MAX_PAGE_MB = 30.0
NIIVUE_FILE = "niivue.umd.js"
BODY_SUV, BODY_HU, MARGIN = 0.05, -500.0, 2
CT_WINDOW = (-160.0, 240.0)  # soft tissue, W400 L40
PET_WINDOW = (1.0, 8.0)  # SUV shown from 1 (below: transparent over the CT) to 8
REF_RGB, PRED_RGB = (0, 114, 178), (213, 94, 0)  # Okabe–Ito blue / vermillion, as the report's outlines
_BYTES = {"pet": 2, "ct": 2, "ref": 1, "pred": 1}  # raw bytes per voxel as embedded (uint16, int16, uint8)
SUV_STEP = 0.01  # the PET is embedded as uint16 counts of 0.01 SUV (NIfTI scl_slope): SUV 0–655.35


def niivue_dir() -> Path:
    """The vendored NiiVue folder (``niivue.umd.js``, ``LICENSE``, ``VERSION``)."""
    folder = Path(str(resources.files("unipet") / "resources" / "niivue"))
    if not (folder / NIIVUE_FILE).exists():
        raise InputFileError(f"the vendored NiiVue script is missing from {folder}; reinstall unipet (or run "
                             "scripts/update_niivue.sh in a source checkout)")
    return folder


def niivue_version() -> str:
    return (niivue_dir() / "VERSION").read_text().strip()


@dataclass
class ViewerVolumes:
    """What a page embeds, cropped/downsampled: ``(z, y, x)`` arrays on one grid and its NIfTI affine (mm).

    Attributes:
        pet: SUV float32 or None; ct: HU int16 or None; ref, pred: uint8 0/1 masks or None.
        factor: downsampling factor per axis ``(z, y, x)``; crop: ``(z0, y0, x0)`` of the crop in the input grid.
        spacing: voxel size in mm ``(z, y, x)`` after downsampling.
    """

    pet: np.ndarray | None
    ct: np.ndarray | None
    ref: np.ndarray | None
    pred: np.ndarray | None
    affine: np.ndarray
    factor: tuple[int, int, int]
    crop: tuple[int, int, int]
    spacing: tuple[float, float, float]

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: v for k, v in (("ct", self.ct), ("pet", self.pet), ("ref", self.ref), ("pred", self.pred))
                if v is not None}


def prepare_volumes(pet: np.ndarray | None, ct: np.ndarray | None, affine: np.ndarray, ref: np.ndarray | None = None,
                    pred: np.ndarray | None = None, max_mb: float = MAX_PAGE_MB, script_bytes: int = 0
                    ) -> ViewerVolumes:
    """Crop to the body and downsample until the page fits ``max_mb``.

    Args:
        pet, ct, ref, pred: ``(z, y, x)`` arrays on one grid (SUV, HU, binary masks); any may be None but not
            both images.
        affine: the grid's 4×4 NIfTI affine (mm).
        script_bytes: bytes of the page that are not volumes (the inlined script, the MIP image, HTML).

    Raises:
        ImageGeometryError: the arrays' shapes differ.
        ConfigError: even the coarsest allowed downsampling does not fit ``max_mb``.
    """
    from unipet.study import spacing_from_affine

    vols = {"pet": pet, "ct": ct, "ref": ref, "pred": pred}
    given = {k: np.asarray(v) for k, v in vols.items() if v is not None}
    if pet is None and ct is None:
        raise InputFileError("the viewer needs a PET or a CT image")
    shapes = {k: v.shape for k, v in given.items()}
    if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 3:
        raise ImageGeometryError(f"viewer volumes must be 3-D arrays on one grid, got shapes {shapes}; resample the "
                                 "masks and the CT onto the PET grid first")
    shape = next(iter(shapes.values()))
    body = np.zeros(shape, bool)
    if "pet" in given:
        body |= given["pet"] > BODY_SUV
    if "ct" in given:
        body |= given["ct"] > BODY_HU
    for k in ("ref", "pred"):
        if k in given:
            body |= given[k] > 0
    if body.any():
        idx = np.nonzero(body)
        lo = [max(int(i.min()) - MARGIN, 0) for i in idx]
        hi = [min(int(i.max()) + 1 + MARGIN, s) for i, s in zip(idx, shape)]
    else:
        lo, hi = [0, 0, 0], list(shape)
    cropped = {k: v[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] for k, v in given.items()}
    crop_shape = tuple(h - lo_ for lo_, h in zip(lo, hi))
    budget = max_mb * 1e6 - script_bytes
    per_voxel = sum(_BYTES[k] for k in given)
    spacing = np.asarray(spacing_from_affine(affine), float)  # (z, y, x) mm
    factor = np.ones(3, int)
    while _raw_size(crop_shape, factor) * per_voxel * 4 / 3 + 352 * 4 * 4 / 3 > budget:
        # coarsen the finest axis (in mm after the current factor) that is still longer than 8 voxels
        candidates = [a for a in range(3) if math.ceil(crop_shape[a] / factor[a]) > 8]
        if not candidates:
            raise ConfigError(f"the study does not fit a {max_mb:g} MB viewer page even downsampled to 8 voxels per "
                              "axis; raise --max-mb")
        axis = min(candidates, key=lambda a: (spacing[a] * factor[a], -crop_shape[a]))
        factor[axis] += 1
    out = {}
    for k, v in cropped.items():
        out[k] = _downsample(v, tuple(factor), "max" if k in ("ref", "pred") else "mean")
    # affine of the new grid: shift by the crop, then scale by the factor around the block centres (index x, y, z)
    shift = np.eye(4)
    shift[:3, 3] = [lo[2], lo[1], lo[0]]
    scale = np.diag([factor[2], factor[1], factor[0], 1.0]).astype(float)
    scale[:3, 3] = [(factor[2] - 1) / 2, (factor[1] - 1) / 2, (factor[0] - 1) / 2]
    new_affine = np.asarray(affine, float) @ shift @ scale
    return ViewerVolumes(
        pet=out["pet"].astype(np.float32) if "pet" in out else None,
        ct=np.clip(np.round(out["ct"]), -32768, 32767).astype(np.int16) if "ct" in out else None,
        ref=(out["ref"] > 0).astype(np.uint8) if "ref" in out else None,
        pred=(out["pred"] > 0).astype(np.uint8) if "pred" in out else None,
        affine=new_affine, factor=(int(factor[0]), int(factor[1]), int(factor[2])), crop=(lo[0], lo[1], lo[2]),
        spacing=tuple(float(s) for s in spacing * factor))


def nifti_gz_bytes(volume_zyx: np.ndarray, affine: np.ndarray, slope: float | None = None) -> bytes:
    """A ``(z, y, x)`` array as gzip-compressed NIfTI-1 bytes (sform and qform set from ``affine``).

    With ``slope`` the values are stored as uint16 counts of ``slope`` (``scl_slope``; readers multiply back),
    clipped to 0..65535 counts.
    """
    import nibabel as nib

    from unipet.study import zyx_to_nifti

    data = np.asarray(volume_zyx)
    if slope is not None:
        data = np.clip(np.round(data / slope), 0, 65535).astype(np.uint16)
    img = nib.Nifti1Image(np.ascontiguousarray(zyx_to_nifti(data)), np.asarray(affine, float))
    if slope is not None:
        img.header.set_slope_inter(slope, 0.0)
    img.set_sform(np.asarray(affine, float), code=1)
    img.set_qform(np.asarray(affine, float), code=1)
    img.header.set_xyzt_units("mm")
    return gzip.compress(img.to_bytes(), compresslevel=1, mtime=0)  # level 1: 3-4x faster, ~10 % larger


def viewer_html(vols: ViewerVolumes, title: str, subtitle: str = "", mip_png: bytes | None = None,
                script: str | None = None, script_src: str | None = None, limit_note: str = "") -> str:
    """The page. ``script`` inlines the NiiVue build; ``script_src`` links it instead (a file beside the page)."""
    if (script is None) == (script_src is None):
        raise ConfigError("give the NiiVue script inline or as a file name, one of them")
    entries = []
    for key, arr in vols.arrays().items():
        entries.append({"key": key, "name": f"{key}.nii.gz",
                        "b64": base64.b64encode(nifti_gz_bytes(arr, vols.affine, SUV_STEP if key == "pet" else None)
                                                ).decode("ascii")})
    pet_max = float(np.percentile(vols.pet[vols.pet > BODY_SUV], 99.9)) if vols.pet is not None and \
        (vols.pet > BODY_SUV).any() else PET_WINDOW[1]
    config = {"volumes": [{k: e[k] for k in ("key", "name")} for e in entries], "ctWindow": CT_WINDOW,
              "petWindow": PET_WINDOW, "petMaxHint": round(max(pet_max, PET_WINDOW[1]), 2),
              "ref": REF_RGB, "pred": PRED_RGB, "focus": focus_voxel(vols)}
    if config["focus"] is not None:  # NiiVue's voxel indices follow its RAS reorientation; millimetres do not
        config["focusMm"] = [round(float(v), 3) for v in (vols.affine @ np.array([*config["focus"], 1.0]))[:3]]
    data = "".join(f"<script type='application/octet-stream' id='vol-{e['key']}'>{e['b64']}</script>" for e in entries)
    tag = (f"<script>{script}</script>" if script is not None else
           f"<script src='{html.escape(script_src, quote=True)}'></script>")
    present = set(vols.arrays())
    boxes = []
    for key, label, colour in (("ct", "CT", "#777"), ("pet", "PET (SUV)", "#e8590c"), ("ref", "reference", "#0072B2"),
                               ("pred", "predicted", "#D55E00")):
        if key in present:
            boxes.append(f"<label><input type='checkbox' id='show-{key}' checked> <span class='sw' "
                         f"style='background:{colour}'></span>{label}</label>")
    mip = (f"<figure class='mip'><img alt='PET MIP' src='data:image/png;base64,{base64.b64encode(mip_png).decode()}'>"
           "<figcaption>PET MIPs: reference blue, predicted vermillion</figcaption></figure>") if mip_png else ""
    return _TEMPLATE.format(
        title=html.escape(title), subtitle=html.escape(subtitle), boxes="".join(boxes), mip=mip, data=data, script=tag,
        config=json.dumps(config), note=html.escape(limit_note), version=html.escape(_version_or_unknown()),
        pet_hi=PET_WINDOW[1], pet_lo=PET_WINDOW[0], pet_range=max(20, math.ceil(config["petMaxHint"])))


def focus_voxel(vols: ViewerVolumes) -> list[int] | None:
    """NIfTI voxel ``[x, y, z]`` where the page opens its crosshair: the hottest PET voxel of the largest reference lesion
    (else predicted lesion, else of the whole PET), so the overlays are in view; None without a PET."""
    if vols.pet is None:
        return None
    from scipy import ndimage

    for mask in (vols.ref, vols.pred):
        if mask is not None and mask.any():
            labels, n = ndimage.label(mask > 0)
            largest = 1 + int(np.argmax(ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, n + 1))))
            z, y, x = np.unravel_index(int(np.argmax(np.where(labels == largest, vols.pet, -np.inf))), mask.shape)
            return [int(x), int(y), int(z)]
    z, y, x = np.unravel_index(int(np.argmax(vols.pet)), vols.pet.shape)
    return [int(x), int(y), int(z)]


def write_viewer(out_html: str | Path, pet: np.ndarray | None, ct: np.ndarray | None, affine: np.ndarray, *,
                 ref: np.ndarray | None = None, pred: np.ndarray | None = None, title: str = "unipet viewer",
                 subtitle: str = "", max_mb: float = MAX_PAGE_MB, inline_script: bool = True, mip: bool = True,
                 overwrite: bool = False, announce: bool = True) -> Path:
    """Write one viewer page for volumes on one grid (``(z, y, x)``, SUV / HU / binary masks, NIfTI affine).

    The page opens its crosshair on the largest lesion (``focus_voxel``). A page whose volumes had to be
    downsampled to fit ``max_mb`` says so on the page and (``announce``) in one warning line.

    Args:
        inline_script: True embeds NiiVue in the page (one self-contained file); False writes
            ``niivue.umd.js`` and its ``LICENSE``/``VERSION`` once beside the page and links it (for many
            pages in one folder, as the report's viewers).
        max_mb: size limit of the page (volumes are cropped/downsampled to fit).
        mip: show the PET MIPs with outlines beside the viewer (the report's pages leave them out: the report
            shows them already).

    Returns:
        ``out_html``.
    """
    from unipet.report.plots import figure_png, mip_figure, to_ras

    out_html = check_writable(out_html, overwrite)
    nv = niivue_dir()
    script = (nv / NIIVUE_FILE).read_text(encoding="utf-8") if inline_script else None
    mip_png = None
    if pet is not None and mip:
        suv_ras, spacing = to_ras(np.asarray(pet, np.float32), affine)
        masks = [to_ras(np.asarray(m) > 0, affine)[0] if m is not None else None for m in (pred, ref)]
        mip_png = figure_png(mip_figure(title, suv_ras, spacing, masks[0], masks[1], height_in=4.0, caption=" "),
                             dpi=70)
    fixed = (len(script.encode("utf-8")) if script else 0) + (len(mip_png) * 4 // 3 if mip_png else 0) + 20_000
    vols = prepare_volumes(pet, ct, affine, ref, pred, max_mb=max_mb, script_bytes=fixed)
    shape = next(iter(vols.arrays().values())).shape
    limit = (f"Volumes cropped to the body ({shape[2]}×{shape[1]}×{shape[0]} voxels of "
             f"{vols.spacing[2]:.1f}×{vols.spacing[1]:.1f}×{vols.spacing[0]:.1f} mm"
             + (f", downsampled ×{vols.factor[2]}/{vols.factor[1]}/{vols.factor[0]} in x/y/z" if max(vols.factor) > 1
                else ", full resolution") + f") to keep this page under {max_mb:g} MB.")
    if not inline_script:
        ensure_folder(out_html.parent)
        for name in (NIIVUE_FILE, "LICENSE", "VERSION"):
            target = out_html.parent / (name if name == NIIVUE_FILE else f"niivue-{name}")
            if not target.exists() or target.stat().st_size != (nv / name).stat().st_size:
                atomic_write_text(target, (nv / name).read_text(encoding="utf-8"), overwrite=True)
    text = viewer_html(vols, title, subtitle, mip_png, script=script,
                       script_src=None if inline_script else NIIVUE_FILE, limit_note=limit)
    if announce and max(vols.factor) > 1:
        log.warning("%s: volumes downsampled x%d/%d/%d in x/y/z to keep the page under %g MB; raise --max-mb for full "
                    "resolution", title, vols.factor[2], vols.factor[1], vols.factor[0], max_mb)
    size = len(text.encode("utf-8"))
    if size > max_mb * 1e6:  # the estimate above is an upper bound; this guards a change of it
        raise ConfigError(f"the viewer page would be {size / 1e6:.1f} MB, over the {max_mb:g} MB limit; raise --max-mb")
    atomic_write_text(out_html, text, overwrite=overwrite)
    return out_html


def write_study_viewer(out_html: str | Path, study: Any, pred: np.ndarray | None = None, *, with_label: bool = True,
                       max_mb: float = MAX_PAGE_MB, inline_script: bool = True, mip: bool = True,
                       overwrite: bool = False, announce: bool = True) -> Path:
    """A viewer page of a ``unipet.Study`` (PET, CT, its label as the reference) and an optional predicted mask
    on the study's grid. Only the pseudonymous study id and the task appear on the page."""
    if pred is not None and np.shape(pred) != tuple(study.shape):
        raise ImageGeometryError(f"the predicted mask has shape {np.shape(pred)} but study {study.study_id} is "
                                 f"{tuple(study.shape)} (z, y, x); give the mask predicted on this study's PET grid")
    subtitle = " · ".join(p for p in (f"task {study.task}" if study.task else "", _volumes_text(study, pred)) if p)
    return write_viewer(out_html, study.pet, study.ct, study.affine, ref=study.label if with_label else None,
                        pred=pred, title=str(study.study_id), subtitle=subtitle, max_mb=max_mb,
                        inline_script=inline_script, mip=mip, overwrite=overwrite, announce=announce)


def load_prediction(path: str | Path, study: Any) -> np.ndarray:
    """A predicted mask NIfTI checked to lie on the study's grid."""
    from unipet.io.nifti import load_volume
    from unipet.study import same_grid

    mask, affine = load_volume(path, what=f"prediction of {study.study_id}", dtype=np.uint8)
    if not same_grid(mask.shape, affine, study.shape, study.affine, tol_mm=1e-2):
        raise ImageGeometryError(f"{path} is not on the PET grid of study {study.study_id} ({mask.shape} vs "
                                 f"{tuple(study.shape)}); give the mask `unipet predict` wrote for this study")
    return (mask > 0).astype(np.uint8)


def write_case_viewer(case: Any, out_dir: str | Path, pred_dir: str | Path | None, task_set: Any = None) -> Path:
    """The report's viewer of a manifest case: ``out_dir/<case_id>.html`` with NiiVue linked from ``out_dir``
    (written there once); the prediction is ``pred_dir/<case_id>.nii.gz`` when it exists."""
    from unipet.io.manifest import load_study

    study = load_study(replace(case, organs=None), task_set, with_label=True)  # organ maps are not shown
    pred_path = Path(pred_dir) / f"{case.case_id}.nii.gz" if pred_dir is not None else None
    pred = load_prediction(pred_path, study) if pred_path is not None and pred_path.exists() else None
    out = inside(Path(out_dir), f"{case.case_id}.html")
    return write_study_viewer(out, study, pred, inline_script=False, mip=False, overwrite=True, announce=False)


def _volumes_text(study: Any, pred: np.ndarray | None) -> str:
    voxel_ml = float(np.prod(study.spacing)) / 1000.0
    parts = []
    if study.label is not None:
        parts.append(f"reference {np.count_nonzero(study.label) * voxel_ml:.1f} mL")
    if pred is not None:
        parts.append(f"predicted {np.count_nonzero(pred) * voxel_ml:.1f} mL")
    return " · ".join(parts)


def _raw_size(shape: Sequence[int], factor: Sequence[int]) -> int:
    return int(np.prod([math.ceil(s / f) for s, f in zip(shape, factor)]))


def _downsample(volume: np.ndarray, factor: tuple[int, int, int], how: str) -> np.ndarray:
    """Block mean or maximum over ``factor`` voxels per axis (edges padded by repeating the last voxel)."""
    if factor == (1, 1, 1):
        return volume
    pad = [(0, (-s) % f) for s, f in zip(volume.shape, factor)]
    v = np.pad(volume.astype(np.float32), pad, mode="edge")
    z, y, x = (s // f for s, f in zip(v.shape, factor))
    blocks = v.reshape(z, factor[0], y, factor[1], x, factor[2])
    return blocks.max(axis=(1, 3, 5)) if how == "max" else blocks.mean(axis=(1, 3, 5))


def _version_or_unknown() -> str:
    try:
        return niivue_version()
    except InputFileError:
        return "unknown"


_TEMPLATE = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title} · unipet viewer</title>
<style>
body{{margin:0;font-family:system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;background:#111;color:#ddd}}
header{{padding:8px 14px;display:flex;flex-wrap:wrap;gap:6px 22px;align-items:center;background:#1b1b1b;font-size:14px}}
header h1{{font-size:17px;margin:0;color:#fff}}.sub{{color:#aaa}}
label{{white-space:nowrap;cursor:pointer}}.sw{{display:inline-block;width:11px;height:11px;margin-right:4px;
border-radius:2px;vertical-align:-1px}}
select,input[type=number]{{background:#222;color:#ddd;border:1px solid #444;border-radius:3px}}
input[type=number]{{width:4.2em}}
main{{display:flex;gap:10px;padding:10px;align-items:flex-start}}
#view{{flex:1 1 auto;min-width:0;height:calc(100vh - 150px);min-height:420px;background:#000}}
canvas{{width:100%;height:100%;display:block}}
.mip{{flex:0 0 auto;margin:0;max-width:30%}}.mip img{{max-width:100%;background:#fff}}
.mip figcaption,footer{{font-size:12px;color:#999}}footer{{padding:0 14px 10px}}
#status{{font-family:monospace;color:#8c8}}
</style></head><body>
<header><h1>{title}</h1><span class="sub">{subtitle}</span>
<label>view <select id="layout"><option value="multi">3 planes + 3-D</option><option value="axial">axial</option>
<option value="coronal">coronal</option><option value="sagittal">sagittal</option><option value="render">3-D render</option>
</select></label>
{boxes}
<label>SUV window <input type="number" id="pet-lo" value="{pet_lo}" min="0" max="{pet_range}" step="0.5"> –
<input type="number" id="pet-hi" value="{pet_hi}" min="0.5" max="{pet_range}" step="0.5"></label>
<label>PET opacity <input type="range" id="pet-opacity" min="0" max="100" value="70"></label>
<span id="status">loading</span></header>
<main><div id="view"><canvas id="gl"></canvas></div>{mip}</main>
<footer>{note} Drag to move the crosshair; scroll to change slice; right-drag in 3-D to rotate. Drawn with
NiiVue {version} (BSD-2-Clause). No data leave this page.</footer>
{data}
{script}
<script>
(function () {{
  const status = document.getElementById("status");
  const fail = (msg) => {{ status.textContent = "error: " + msg; status.style.color = "#f66"; }};
  window.addEventListener("error", (e) => fail(e.message));
  window.addEventListener("unhandledrejection", (e) => fail(String(e.reason)));
  const cfg = {config};
  if (typeof niivue === "undefined") {{ fail("the NiiVue script did not load"); return; }}
  const nv = new niivue.Niivue({{backColor: [0, 0, 0, 1], show3Dcrosshair: true, isColorbar: false,
                                 crosshairColor: [0.3, 1, 0.3, 0.55], crosshairGap: 12, crosshairWidth: 1,
                                 loadingText: "loading", dragAndDropEnabled: false}});
  const rgb = (c) => ({{R: [0, c[0], c[0]], G: [0, c[1], c[1]], B: [0, c[2], c[2]], A: [0, 255, 255], I: [0, 1, 255]}});
  nv.addColormap("unipet_ref", rgb(cfg.ref));
  nv.addColormap("unipet_pred", rgb(cfg.pred));
  const style = {{
    ct: {{colormap: "gray", cal_min: cfg.ctWindow[0], cal_max: cfg.ctWindow[1], opacity: 1}},
    pet: {{colormap: "hot", cal_min: cfg.petWindow[0], cal_max: cfg.petWindow[1], opacity: 0.7}},
    ref: {{colormap: "unipet_ref", cal_min: 0.5, cal_max: 1, opacity: 0.8}},
    pred: {{colormap: "unipet_pred", cal_min: 0.5, cal_max: 1, opacity: 0.8}},
  }};
  const index = {{}};
  const opacity = {{}};
  async function start() {{
    await nv.attachTo("gl");
    nv.setRadiologicalConvention(true);
    const keys = cfg.volumes.map((v) => v.key);
    if (!keys.includes("ct")) {{ style.pet.colormap = "gray"; style.pet.cal_min = 0; style.pet.opacity = 1; }}
    for (const v of cfg.volumes) {{
      const s = style[v.key];
      const b64 = document.getElementById("vol-" + v.key).textContent;
      const img = await niivue.NVImage.loadFromBase64({{base64: b64, name: v.name, colormap: s.colormap,
        cal_min: s.cal_min, cal_max: s.cal_max, opacity: s.opacity, trustCalMinMax: true}});
      index[v.key] = nv.volumes.length;
      opacity[v.key] = s.opacity;
      nv.addVolume(img);
    }}
    if (cfg.focusMm) {{ nv.scene.crosshairPos = nv.mm2frac(cfg.focusMm); }}
    nv.setRenderAzimuthElevation(180, 10);  // the 3-D render starts from the front
    nv.opts.isOrientCube = true;
    nv.setSliceType(nv.sliceTypeMultiplanar);
    nv.opts.multiplanarShowRender = niivue.SHOW_RENDER.ALWAYS;
    bind();
    const params = new URLSearchParams(window.location.search);
    if (params.get("layout")) {{ const sel = document.getElementById("layout"); sel.value = params.get("layout");
      sel.dispatchEvent(new Event("change")); }}
    for (const key of (params.get("hide") || "").split(",").filter(Boolean)) {{
      const box = document.getElementById("show-" + key);
      if (box && box.checked) box.click();
    }}
    nv.drawScene();
    status.textContent = "ready";
    document.body.dataset.ready = "1";
  }}
  function setVisible(key, on) {{
    if (!(key in index)) return;
    nv.volumes[index[key]].opacity = on ? opacity[key] : 0;
    nv.updateGLVolume();
  }}
  function bind() {{
    for (const key of Object.keys(index)) {{
      const box = document.getElementById("show-" + key);
      if (box) box.addEventListener("change", () => setVisible(key, box.checked));
    }}
    const lo = document.getElementById("pet-lo"), hi = document.getElementById("pet-hi");
    const win = () => {{ if (!("pet" in index)) return; const v = nv.volumes[index.pet];
      v.cal_min = Number(lo.value); v.cal_max = Math.max(Number(hi.value), Number(lo.value) + 0.1);
      nv.updateGLVolume(); }};
    lo.addEventListener("change", win); hi.addEventListener("change", win);
    const op = document.getElementById("pet-opacity");
    op.addEventListener("input", () => {{ if (!("pet" in index)) return; opacity.pet = Number(op.value) / 100;
      if (document.getElementById("show-pet").checked) setVisible("pet", true); }});
    const types = {{multi: nv.sliceTypeMultiplanar, axial: nv.sliceTypeAxial, coronal: nv.sliceTypeCoronal,
                   sagittal: nv.sliceTypeSagittal, render: nv.sliceTypeRender}};
    document.getElementById("layout").addEventListener("change", (e) => nv.setSliceType(types[e.target.value]));
  }}
  start().catch((e) => fail(e && e.message ? e.message : String(e)));
}})();
</script></body></html>
"""
