"""Shim so `pip install -e .` works; all metadata lives in setup.cfg."""
import setuptools

setuptools.setup()
