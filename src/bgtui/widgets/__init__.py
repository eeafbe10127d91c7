"""Widgets the bgtui screens share: header, countdown, plane progress."""
