"""Bounded, multi-resolution history of GPUs, processes and run metrics, with frozen snapshots."""
