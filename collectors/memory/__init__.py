"""Physical memory acquisition: ranges, image formats, the collector."""
