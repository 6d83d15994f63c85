"""Analyses over the IR (tables keyed by node name) and the report that assembles them."""
