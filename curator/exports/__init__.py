"""Exports: a built corpus written in the layouts trainers' own loaders read unmodified."""
