"""Cooperative cancellation, shared by every long loop (training, sensitivity scans) without them
importing each other: a loop polls `should_stop()` and raises `Cancelled` with where it stopped."""


class Cancelled(Exception):
    """Raised inside a long loop when its `should_stop()` says so."""
