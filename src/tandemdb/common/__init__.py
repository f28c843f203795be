"""Pieces every Tandem service shares: the HTTP error contract, auth, metrics, config."""
