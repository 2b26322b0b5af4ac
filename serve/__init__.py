"""The Ray Serve application (see app.py)."""
