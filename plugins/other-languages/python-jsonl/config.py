"""The plugin's config: checked key by key, every problem named."""

import json

# 102 400 bytes: what Vector's `socket` source takes by default.
DEFAULTS = {"timeout_ms": 5000, "max_line_bytes": 102400}
RANGES = {
    "timeout_ms": (1, 600000, "milliseconds"),
    "max_line_bytes": (256, 16 * 1024 * 1024, "bytes"),
}
SCHEMA = json.dumps({
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "timeout_ms": {
            "type": "integer",
            "minimum": 1,
            "maximum": 600000,
            "default": 5000,
            "description": "How long connecting (TCP and the TLS handshake) may take.",
        },
        "max_line_bytes": {
            "type": "integer",
            "minimum": 256,
            "maximum": 16777216,
            "default": 102400,
            "description": "The longest line the receiver takes; a longer event is rejected "
            "(safd's dead letters) with its size.",
        },
    },
})


def parse(text):
    """(config, problems): problems is a list of (path, message)."""
    if not text.strip():
        text = "{}"
    try:
        given = json.loads(text)
    except ValueError as err:
        return None, [("", f"the config is not JSON: {err}")]
    if not isinstance(given, dict):
        return None, [("", "the config is not a JSON object: write it as a table (`config = { … }`)")]
    problems = []
    for key in given:
        if key not in DEFAULTS:
            problems.append((key, f"unknown key `{key}`: the keys are {', '.join(DEFAULTS)}"))
    config = dict(DEFAULTS)
    for key, (least, most, unit) in RANGES.items():
        value = given.get(key, DEFAULTS[key])
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append((key, f"is not a whole number of {unit}"))
        elif not least <= value <= most:
            problems.append((key, f"is {value}; give {least} to {most} ({unit})"))
        else:
            config[key] = value
    return (None if problems else config), problems
