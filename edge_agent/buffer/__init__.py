"""The only SQLite user: the outbox, its file, ids, eviction, statistics and the writer thread."""
