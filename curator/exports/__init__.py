"""Exports: a built corpus in the layouts trainers' own loaders read unmodified.

``hf``: Hugging Face ``datasets``; ``llava``: LLaVA, InternVL and xtuner.
"""
