"""Volatile state read in-process from /proc, /sys and psutil."""
