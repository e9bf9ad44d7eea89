"""Reply framings: one decoder and one planner per upstream protocol (see frames)."""
