"""Where event data comes from: the synthetic generator and importers of external formats."""
