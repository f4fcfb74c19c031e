"""Authors-exact replication, proven number for number: `egspo fidelity check DIR` (see docs/fidelity.md)."""
