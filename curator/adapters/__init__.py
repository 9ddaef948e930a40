"""Adapters: one small class per native dataset layout. See ``base.Adapter``."""
