"""Pure rules and wire types: no I/O, no framework imports."""
