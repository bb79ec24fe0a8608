"""The stage every value passes before it is stored: scanner, pseudonyms, masks, keys, seals, log filter."""
