"""Use cases. No HTTP here: callers pass a Principal in and get wire models or domain errors out."""
