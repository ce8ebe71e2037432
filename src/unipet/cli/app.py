"""The Typer application object that every ``unipet.cli.<area>`` module adds its sub-commands to."""
import typer
from typer.core import TyperCommand

app = typer.Typer(
    name="unipet",
    help="Universal, prompt-driven lesion segmentation in whole-body PET/CT, PET biomarkers and survival analysis."
    "\n\nFormer names of the paper commands still run, hidden: export, adapt (now gcis), experts, pretrain-anatomy "
    "(mastpro), tamw-weights (h2aseg), pretrain, organs (anatomy).",
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


def family(name: str, help: str, examples: list[str]) -> typer.Typer:
    """A command family of a paper or model (``unipet gcis export``): a sub-application added to ``app``, its help
    ending with ``examples`` (command lines)."""
    text = help + "\n\nExamples:\n\n" + "\n\n".join(f"    {e}" for e in examples)
    sub = typer.Typer(name=name, help=text, no_args_is_help=True, add_completion=False, rich_markup_mode="rich")
    app.add_typer(sub, name=name)
    return sub


def family_command(sub: typer.Typer, name: str, alias: str | None = None):
    """Register a function as ``unipet <family> <name>``, and as the hidden top-level ``unipet <alias>`` (the
    command's name before families existed; kept for one release)."""

    def register(fn):
        sub.command(name)(fn)
        if alias is not None:
            app.command(alias, hidden=True)(fn)
        return fn

    return register


class HiddenArgumentsCommand(TyperCommand):
    """A command whose hidden positional arguments (an older calling form kept working) stay out of the usage
    line, as hidden options do (``@app.command(..., cls=HiddenArgumentsCommand)``)."""

    def collect_usage_pieces(self, ctx):
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if not getattr(param, "hidden", False):
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces
