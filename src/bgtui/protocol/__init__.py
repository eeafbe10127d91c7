"""Signed objects, keys and encodings shared by the client and the controller."""
