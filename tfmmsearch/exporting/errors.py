"""Export errors a user can cause, importable without TensorFlow (the CLI catches them)."""


class ExportBusyError(RuntimeError):
    """Another process is writing a version under the same model base path."""


class ExportConfigError(ValueError):
    """The config asks the export for something the catalog cannot give (a missing column)."""


class UpdateError(ValueError):
    """An index update that cannot be applied as asked; nothing is written."""
