"""SSH wire encoding (RFC 4251 §5): the strings and integers inside keys and signatures."""

from __future__ import annotations

import struct

from bgtui.protocol.errors import Refused


def uint32(value: int) -> bytes:
    return struct.pack(">I", value)


def string(value: bytes | str) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return uint32(len(data)) + data


class Reader:
    """Reads SSH wire fields from a buffer, refusing truncated or oversized input."""

    def __init__(self, data: bytes, what: str = "data") -> None:
        self._data = data
        self._pos = 0
        self._what = what

    def uint32(self) -> int:
        if self._pos + 4 > len(self._data):
            raise Refused(f"malformed {self._what}: truncated")
        (value,) = struct.unpack_from(">I", self._data, self._pos)
        self._pos += 4
        return int(value)

    def string(self) -> bytes:
        length = self.uint32()
        if self._pos + length > len(self._data):
            raise Refused(f"malformed {self._what}: truncated")
        value = self._data[self._pos : self._pos + length]
        self._pos += length
        return value

    def raw(self, length: int) -> bytes:
        if self._pos + length > len(self._data):
            raise Refused(f"malformed {self._what}: truncated")
        value = self._data[self._pos : self._pos + length]
        self._pos += length
        return value

    def text(self) -> str:
        try:
            return self.string().decode()
        except UnicodeDecodeError:
            raise Refused(f"malformed {self._what}: text field is not UTF-8") from None

    def rest(self) -> bytes:
        return self._data[self._pos :]

    def done(self) -> bool:
        return self._pos == len(self._data)

    def expect_done(self) -> None:
        if not self.done():
            raise Refused(f"malformed {self._what}: trailing bytes")
