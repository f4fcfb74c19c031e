"""Infrastructure shared by every layer: atomic file writes and JSONL reading."""
