"""The postgres backend of the log."""
