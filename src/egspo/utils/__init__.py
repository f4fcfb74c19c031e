"""Infrastructure shared by every layer: atomic and durable file writes and JSONL / JSON reading (``files``), the
user-error type and disk-full detection (``errors``), one-writer output locks (``locking``), pinned numerics
(``numerics``)."""
