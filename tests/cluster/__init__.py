"""The real test cluster: build.sh (binaries), images.sh (images), harness.py (processes; its
docstring maps the modules), fixtures.py (pytest)."""
