"""The sqlite backend of the log."""
