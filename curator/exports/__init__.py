"""Exports: a built corpus in the formats trainers' own loaders read (``llava``: LLaVA, InternVL, xtuner)."""
