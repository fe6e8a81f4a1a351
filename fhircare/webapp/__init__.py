"""The built web app (package data written by scripts/build-app; do not edit)."""
