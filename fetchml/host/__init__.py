"""What fetchml reads and writes on the machine it runs on: its environment and its files."""
