"""Declarative data: profiles and artifact specs (TOML). No code lives here."""
