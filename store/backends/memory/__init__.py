"""The memory backend of the log."""
