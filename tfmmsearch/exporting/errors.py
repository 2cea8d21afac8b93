"""Export errors a user can cause, importable without TensorFlow (the CLI catches them)."""


class ExportBusyError(RuntimeError):
    """Another process is writing a version under the same model base path."""
