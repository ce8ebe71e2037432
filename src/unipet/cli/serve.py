"""``unipet serve``: the DICOM node (receive PET/CT by C-STORE, segment, send SEG + SR (+ RTSTRUCT) back)."""
from __future__ import annotations

from pathlib import Path

import typer

from unipet.cli._common import console
from unipet.cli.app import app


@app.command("serve")
def serve_command(
    work_dir: Path = typer.Option(None, "--work-dir", help="Folder of the queue (queue.sqlite), received studies, results and node.log."),
    config: Path = typer.Option(None, "--config", help="JSON file with the settings below (keys as in node.json); options override it."),
    ae_title: str = typer.Option(None, "--ae-title", help="The node's AE title [UNIPET]."),
    host: str = typer.Option(None, "--host", help="Address to listen on [127.0.0.1: loopback only; 0.0.0.0 to accept the network]."),
    port: int = typer.Option(None, "--port", help="DICOM port to listen on [11112]."),
    allow: list[str] = typer.Option(None, "--allow", help="Calling AE title accepted (repeatable; at least one)."),
    dest: str = typer.Option(None, "--dest", help="Where results go by C-STORE, AE@host:port (e.g. ORTHANC@127.0.0.1:4242); none: kept in WORK_DIR/results."),
    stable_s: float = typer.Option(None, "--stable-s", help="Seconds without a new instance before a study counts as complete [30]."),
    checkpoint: str = typer.Option(None, "--checkpoint", help="Run or checkpoint folder [the model shipped with unipet]."),
    task: str = typer.Option(None, "--task", help="Task of every study [the model infers it]."),
    device: str = typer.Option(None, "--device", help="auto, cpu or cuda [auto]."),
    rtstruct: bool = typer.Option(None, "--rtstruct/--no-rtstruct", help="Also send an RT Structure Set [no]."),
    status: bool = typer.Option(False, "--status", help="Print the queue of WORK_DIR (one line per study) and exit."),
) -> None:
    """Run a DICOM node: a PACS pushes PET/CT studies to it (C-STORE); once a study has been stable for
    --stable-s it is segmented and the DICOM-SEG, the TID 1500 SR (SUVmax/SUVpeak/MTV/TLG per lesion) and,
    with --rtstruct, an RTSTRUCT go back to --dest by C-STORE. The queue (WORK_DIR/queue.sqlite) survives
    restarts: a node stopped mid-study resumes it, and no study is processed twice. Studies that cannot be
    processed (no PET, missing SUV tags, half a series) are logged with one reason and marked failed.

    Examples — a working configuration, with Orthanc (AE ORTHANC, DICOM port 4242) as the PACS:

        unipet serve --work-dir /var/lib/unipet-node --ae-title UNIPET --port 11112 --allow ORTHANC --dest ORTHANC@127.0.0.1:4242 --rtstruct

    and in Orthanc's configuration: "DicomModalities": {"unipet": ["UNIPET", "127.0.0.1", 11112]}; then
    send a study from Orthanc (Explorer: Send to DICOM modality -> unipet, or
    curl -X POST http://localhost:8042/modalities/unipet/store -d STUDY_ID).

    The same as a file (unipet serve --config node.json):

        {"work_dir": "/var/lib/unipet-node", "ae_title": "UNIPET", "port": 11112, "allowed_aes": ["ORTHANC"], "destination": "ORTHANC@127.0.0.1:4242", "rtstruct": true}

        unipet serve --work-dir /var/lib/unipet-node --status
    """
    from unipet.fileio import read_json_object

    if status:
        from unipet.errors import ConfigError
        from unipet.serve.node import status_table

        if work_dir is None or not (work_dir / "queue.sqlite").exists():
            raise ConfigError("--status needs the --work-dir of a node (holding queue.sqlite)")
        for row in status_table(work_dir):
            reason = f"  {row['reason']}" if row["reason"] else ""
            seg = f" segment {row['segment_s']:.1f} s" if row["segment_s"] is not None else ""
            console.print(f"{row['study']}  {row['status']:<10} {row['instances']} instances{seg}{reason}",
                          markup=False, highlight=False, soft_wrap=True)
        return
    from unipet.serve import DicomNode, NodeConfig

    data = read_json_object(config, what="node configuration") if config is not None else {}
    cfg = NodeConfig.from_json(data, work_dir=work_dir, ae_title=ae_title, host=host, port=port,
                               allowed_aes=allow or None, destination=dest, stable_s=stable_s, checkpoint=checkpoint,
                               task=task, device=device, rtstruct=rtstruct)
    node = DicomNode(cfg)
    node.start()
    console.print(f"unipet node {cfg.ae_title} listening on {cfg.host}:{cfg.port} (work folder {cfg.work_dir}); "
                  "Ctrl-C stops it", markup=False, highlight=False)
    node.run()
