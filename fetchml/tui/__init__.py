"""Textual dashboard of live scheduler state (reads through fetchml.client)."""
