"""Audit tools: answer an auditor's questions from the corpus tables alone."""
