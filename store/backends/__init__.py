"""The storage backends of the log: memory, SQLite file and PostgreSQL.

Each backend is a package; :mod:`.recorder` is the narrow seam they all implement.
"""
