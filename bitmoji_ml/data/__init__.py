"""Dataset layout, validation, lists, image decoding and the uint8 cache (no torch here)."""
