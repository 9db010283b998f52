"""The upload backends, one file per storage service."""
