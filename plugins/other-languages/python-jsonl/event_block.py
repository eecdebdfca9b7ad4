"""The WIT contract's event-block encoding, read in plain Python.

A sequenced block (what `deliver` gets) is, per event:

    varint(seq) zigzag(time) varint(severity) varint(n)
    varint(len(id)) (varint(len(key)) varint(len(value))){n}
    varint(len(body)) text

where `text` is the id, the keys and values and the body as one UTF-8
run, cut at the given byte lengths. No WIT binding is imported here, so
the module is tested natively (`python3 -m unittest` in this directory).
"""

SEVERITIES = ("debug", "info", "warning", "minor", "major", "critical")


class BlockError(ValueError):
    """A block that does not decode (safd never sends one)."""


def _varint(data, pos):
    result = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise BlockError("the block ends inside a number")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise BlockError("a number is longer than 10 bytes")


class TooLarge:
    """An event whose text is over the limit given to `sequenced`: its seq
    and size, its text not decoded."""

    def __init__(self, seq, text_bytes):
        self.seq = seq
        self.text_bytes = text_bytes


def sequenced(data, count, max_text_bytes=None):
    """Yield (seq, id, time, severity, attributes, body) for each event of a
    sequenced block; attributes is a list of (key, value) pairs. An event
    whose text (id, keys, values and body) is over `max_text_bytes` is
    yielded as a `TooLarge`."""
    pos = 0
    for _ in range(count):
        seq, pos = _varint(data, pos)
        raw_time, pos = _varint(data, pos)
        time = (raw_time >> 1) ^ -(raw_time & 1)
        severity, pos = _varint(data, pos)
        if severity >= len(SEVERITIES):
            raise BlockError(f"severity code {severity}")
        pairs, pos = _varint(data, pos)
        id_len, pos = _varint(data, pos)
        lengths = []
        for _ in range(pairs):
            key_len, pos = _varint(data, pos)
            value_len, pos = _varint(data, pos)
            lengths.append((key_len, value_len))
        body_len, pos = _varint(data, pos)
        text_bytes = id_len + body_len + sum(k + v for k, v in lengths)
        if max_text_bytes is not None and text_bytes > max_text_bytes:
            if pos + text_bytes > len(data):
                raise BlockError("a string runs past the block")
            pos += text_bytes
            yield TooLarge(seq, text_bytes)
            continue

        def take(n):
            nonlocal pos
            if pos + n > len(data):
                raise BlockError("a string runs past the block")
            text = bytes(data[pos:pos + n]).decode("utf-8")
            pos += n
            return text

        event_id = take(id_len)
        attributes = [(take(k), take(v)) for k, v in lengths]
        body = take(body_len)
        yield seq, event_id, time, SEVERITIES[severity], attributes, body
    if pos != len(data):
        raise BlockError("bytes follow the last event")
