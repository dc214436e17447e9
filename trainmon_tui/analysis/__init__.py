"""Pure analysis over model values and state snapshots: ETA, smoothing, health verdicts."""
