"""One event as one JSON line: the shape of the management protocol's
events (docs/protocol.md), with the agent and the stream on every line so
that a receiver needs no session state."""

import datetime
import json

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def rfc3339(micros):
    """The time as RFC 3339 with microseconds, or None outside years
    1–9999 (the event keeps `time_us` either way)."""
    try:
        moment = _EPOCH + datetime.timedelta(microseconds=micros)
    except OverflowError:
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def line(agent, stream, seq, event_id, time, severity, attributes, body):
    return json.dumps(
        {
            "agent": agent,
            "stream": stream,
            "seq": seq,
            "id": event_id,
            "time": rfc3339(time),
            "time_us": time,
            "severity": severity,
            "attributes": [[k, v] for k, v in attributes],
            "body": body,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    ) + "\n"
