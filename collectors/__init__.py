"""Everything that produces evidence; collectors know nothing of tar, upload or CLI."""
