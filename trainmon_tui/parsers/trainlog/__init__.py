"""Training-log reading: line cleaning, per-framework families, events, format detection."""
