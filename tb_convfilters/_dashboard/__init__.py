"""The packaged dashboard seen from Python: where its files are, and its colour definition."""
