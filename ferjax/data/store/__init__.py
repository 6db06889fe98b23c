"""The shard store: decoded faces in ArrayRecord files, read by random access."""
