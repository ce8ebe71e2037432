"""Errors raised for user mistakes and bad input.

Every message says what was wrong and what to do; the CLI prints it on one line and exits non-zero.
Programming errors (bugs) stay ordinary Python exceptions so that they keep their traceback.
"""


class UnipetError(Exception):
    """Base class of every error that a user can cause and fix."""


class InputFileError(UnipetError):
    """A file is missing, unreadable, corrupt or of the wrong kind."""


class ImageGeometryError(UnipetError):
    """An image has the wrong dimensionality, or two grids that must agree do not."""


class IntensityError(UnipetError):
    """Voxel values are impossible for what the image claims to be (NaN, Bq/mL where SUV is expected, ...)."""


class LabelError(UnipetError):
    """A label / mask volume holds values it must not (e.g. not 0/1 for a binary mask)."""


class DicomError(UnipetError):
    """A DICOM folder or header cannot give what was asked (no PET series, a missing SUV tag, ...)."""


class OutputExistsError(UnipetError):
    """An output path exists already; unipet refuses to overwrite without ``overwrite=True``."""


class UnknownTaskError(UnipetError):
    """A task (cancer type / target) name is not in the task set in use."""


class MissingInputError(UnipetError):
    """A model or stage needs an input (task prompt, text embedding, organ map, ...) that was not given."""


class ConfigError(UnipetError):
    """A configuration, recipe, manifest or checkpoint is malformed or inconsistent."""


class BatchError(UnipetError):
    """Some cases of a batch job failed; the others were written and a re-run retries only the failed ones."""


class OutputError(UnipetError):
    """An output cannot be written where asked (a read-only folder, a file where a folder must be, a path that
    leaves its output folder)."""


class DiskFullError(OutputError):
    """The disk (or quota) filled up while writing; the message says how much space is needed where."""


class InterruptedRun(UnipetError):
    """A long job (training) was stopped by a signal after saving its state; ``exit_code`` is what the CLI
    returns (128 + the signal number, 143 for SIGTERM) so that schedulers see the run did not finish."""

    def __init__(self, message: str, exit_code: int = 143) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def check_known_fields(cls: type, data: dict, what: str) -> None:
    """Raise ``ConfigError`` naming the keys of ``data`` that are not fields of the dataclass ``cls``.

    ``what`` names the settings in the message, e.g. ``"recipe fields"``.
    """
    from dataclasses import fields

    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"unknown {what} {sorted(unknown)}; known: {', '.join(sorted(known))}")
