"""Where read models are materialized: in memory, SQLite tables or PostgreSQL tables."""
