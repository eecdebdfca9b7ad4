"""`python-jsonl`: a safd destination plugin written in Python.

Each delivery is written as JSON lines (one event per line, see
`jsonl.py`) to a receiver over TLS — Vector's `socket` source, Logstash's
`tcp` input with the `json_lines` codec, Fluent Bit's `tcp` input — through
safd's `tls` interface: safd makes the connection to the member's address
(granted in `grants.tcp`) with the certificates of `grants.tls`, and the
plugin writes plain bytes.

Built by `cargo xtask plugins` with componentize-py, which wants the
interface's functions here (`DestinationConnector`) and the `writer`
resource in the module named after the interface
(`destination_connector.py`).
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import destination_connector as dc
from wit_world.imports import types

import config

VERSION = "0.1.0"


class DestinationConnector(exports.DestinationConnector):
    def describe(self):
        return types.Description(
            name="python-jsonl",
            version=VERSION,
            kind=types.ConnectorKind.DESTINATION,
            summary="Writes events as JSON lines over TLS to a line-reading receiver "
            "(Vector, Logstash, Fluent Bit); written in Python.",
            config_schema=config.SCHEMA,
        )

    def acknowledgement_kind(self):
        # The receiver does not confirm lines: written and flushed is all
        # this transport can say.
        return dc.Acknowledgement.TRANSPORT_WRITE

    def validate_config(self, text):
        _, problems = config.parse(text)
        if problems:
            raise Err([types.ConfigProblem(path=path, message=message) for path, message in problems])
