"""Indico plugin: an event's abstract booklet, built by a taskwire server."""
