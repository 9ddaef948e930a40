"""Stages: ingest, caption, shard. Each reads tables from a Corpus and writes tables."""
