"""What a gp-serve client user runs: CSV batch scoring against a running server."""
