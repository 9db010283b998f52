"""File artifacts: histories, SSH, accounts, raw copies."""
