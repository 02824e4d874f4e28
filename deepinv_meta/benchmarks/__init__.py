"""Benchmarks: scripts that measure and print, with their configuration and machine."""
