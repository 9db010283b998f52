"""Collectors that parse on-disk structures themselves (raw filesystems through The Sleuth Kit)."""
