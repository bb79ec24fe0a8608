"""Geohash encoding: a position made coarser on purpose (privacy's ``generalize`` of a location).

A geohash interleaves longitude and latitude bisection bits (longitude first) and writes them
five at a time in the alphabet ``0123456789bcdefghjkmnpqrstuvwxyz``. Each character narrows the
cell; the length is the privacy knob (``privacy.geohash_length``)::

    length  cell (at the equator)      length  cell
      4     ~39 km x 20 km               6     ~1.2 km x 0.6 km (default: a neighbourhood)
      5     ~4.9 km x 4.9 km             7     ~153 m x 153 m

Our own ~30 lines rather than a dependency: the algorithm is fixed and tiny (STYLE: prefer our
own small codec over a weak third-party one). Only encoding is needed on the gateway; ``bounds``
exists so tests can check that a position falls inside its cell.
"""

from __future__ import annotations

__all__ = ["encode", "bounds", "ALPHABET"]

ALPHABET = "0123456789bcdefghjkmnpqrstuvwxyz"


def encode(lat: float, lon: float, length: int = 6) -> str:
    """The geohash of ``(lat, lon)`` with ``length`` characters (1..12)."""
    if not -90.0 <= lat <= 90.0 or not -180.0 <= lon <= 180.0:
        raise ValueError(f"position ({lat}, {lon}) is outside latitude -90..90 / longitude -180..180")
    if not 1 <= length <= 12:
        raise ValueError(f"geohash length {length} is outside 1..12")
    lat_lo, lat_hi, lon_lo, lon_hi = -90.0, 90.0, -180.0, 180.0
    out: list[str] = []
    bits = value = 0
    even = True  # even bits refine longitude, odd bits latitude
    while len(out) < length:
        if even:
            mid = (lon_lo + lon_hi) / 2
            if lon >= mid:
                value, lon_lo = value * 2 + 1, mid
            else:
                value, lon_hi = value * 2, mid
        else:
            mid = (lat_lo + lat_hi) / 2
            if lat >= mid:
                value, lat_lo = value * 2 + 1, mid
            else:
                value, lat_hi = value * 2, mid
        even = not even
        bits += 1
        if bits == 5:
            out.append(ALPHABET[value])
            bits = value = 0
    return "".join(out)


def bounds(code: str) -> tuple[float, float, float, float]:
    """``(lat_min, lat_max, lon_min, lon_max)`` of the cell ``code`` names."""
    lat_lo, lat_hi, lon_lo, lon_hi = -90.0, 90.0, -180.0, 180.0
    even = True
    for ch in code:
        value = ALPHABET.index(ch)
        for shift in range(4, -1, -1):
            bit = (value >> shift) & 1
            if even:
                mid = (lon_lo + lon_hi) / 2
                lon_lo, lon_hi = (mid, lon_hi) if bit else (lon_lo, mid)
            else:
                mid = (lat_lo + lat_hi) / 2
                lat_lo, lat_hi = (mid, lat_hi) if bit else (lat_lo, mid)
            even = not even
    return lat_lo, lat_hi, lon_lo, lon_hi
