"""The Typer application object that every ``unipet.cli.<area>`` module adds its sub-commands to."""
import typer

app = typer.Typer(
    name="unipet",
    help="Universal, prompt-driven lesion segmentation in whole-body PET/CT, PET biomarkers and survival analysis.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


@app.callback()
def _root() -> None:
    """unipet: prompt-driven universal lesion segmentation for whole-body PET/CT.

    Start with `unipet demo`; every sub-command has --help with examples.
    """
