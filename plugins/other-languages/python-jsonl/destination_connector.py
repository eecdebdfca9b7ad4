"""The `writer` resource: one TLS connection to one member."""

from componentize_py_types import Err
from wit_world.exports import destination_connector as dc
from wit_world.imports import log, streams, tls, types

import config
import event_block
import jsonl


# Bytes of JSON lines gathered before they are written.
PIECE = 64 * 1024


def _error(case, message):
    return Err(case(message))


class Writer(dc.Writer):
    def __init__(self, text, endpoint):
        parsed, problems = config.parse(text)
        if problems:
            raise _error(
                types.ConnectorError_Fatal,
                "; ".join(f"{path}: {message}" if path else message for path, message in problems),
            )
        self.timeout_ms = parsed["timeout_ms"]
        self.max_line_bytes = parsed["max_line_bytes"]
        self.buffer = bytearray()
        self.address = endpoint.address
        self.agent = ""
        self.connection = None

    def _connect(self):
        if self.connection is not None:
            return self.connection
        try:
            self.connection = tls.connect(self.address, self.timeout_ms)
        except Err as err:
            reason = err.value
            if isinstance(reason, tls.TlsError_Denied):
                # safd names the grant to add.
                raise _error(types.ConnectorError_Unauthorized, reason.value)
            if isinstance(reason, tls.TlsError_Settings):
                raise _error(types.ConnectorError_Fatal, reason.value)
            raise _error(types.ConnectorError_Unavailable, reason.value)
        log.emit(log.Level.INFO, f"connected to {self.address}", [])
        return self.connection

    def _drop(self, why):
        self.connection = None
        return _error(types.ConnectorError_Unavailable, f"connection to {self.address} lost: {why}")

    def _peer_closed(self):
        """Why the receiver's side of the connection ended, or None while it
        is open (a read says so at once; what the receiver sends is of no
        interest)."""
        try:
            self.connection.input.read(4096)
            return None
        except Err as err:
            if isinstance(err.value, streams.StreamError_Closed):
                return "the receiver closed it"
            return f"it failed: {err.value.value.to_debug_string()}"

    def _write_all(self, data):
        output = self.connection.output
        try:
            while data:
                room = output.check_write()
                if room == 0:
                    output.subscribe().block()
                    continue
                output.write(data[:room])
                data = data[room:]
            output.blocking_flush()
        except Err as err:
            raise self._drop(f"write failed ({type(err.value).__name__})")

    def register(self, info):
        self.agent = info.agent_id
        self._connect()
        # A line receiver keeps no positions: nothing held, nothing to ask.
        return dc.Registration(high_water=[], service_ready=True, catch_up=None)

    def deliver(self, batches):
        self._connect()
        closed = self._peer_closed()
        if closed:
            raise self._drop(closed)
        # Lines gather in one buffer of the writer's, written every PIECE
        # bytes: a whole delivery as one string (or a list of its lines)
        # costs megabytes more at once within the 64 MiB limit, and under
        # sustained load the heap grew into it.
        buffer = self.buffer
        buffer.clear()  # what a failed delivery left
        acknowledged = []
        rejected = []

        def reject(stream, seq, size):
            rejected.append(
                dc.Rejection(
                    stream=stream,
                    seq=seq,
                    reason=f"a line of {size} bytes or more is longer than max_line_bytes ({self.max_line_bytes})",
                )
            )

        for batch in batches:
            last = None
            try:
                for event in event_block.sequenced(batch.events.bytes, batch.events.count, self.max_line_bytes):
                    if isinstance(event, event_block.TooLarge):
                        # A JSON line is never shorter than the text.
                        last = event.seq
                        reject(batch.stream, event.seq, event.text_bytes)
                        continue
                    seq, event_id, time, severity, attributes, body = event
                    last = seq
                    encoded = jsonl.line(
                        self.agent, batch.stream, seq, event_id, time, severity, attributes, body
                    ).encode("utf-8")
                    if len(encoded) > self.max_line_bytes:
                        reject(batch.stream, seq, len(encoded))
                        continue
                    buffer += encoded
                    if len(buffer) >= PIECE:
                        self._write_all(bytes(buffer))
                        buffer.clear()
            except event_block.BlockError as err:
                raise _error(types.ConnectorError_Rejected, f"stream {batch.stream}: {err}")
            if last is not None:
                acknowledged.append(types.StreamPosition(stream=batch.stream, seq=last))
        if buffer:
            self._write_all(bytes(buffer))
            buffer.clear()
        return dc.DeliveryReport(acknowledged=acknowledged, rejected=rejected)

    def probe(self):
        self._connect()
        closed = self._peer_closed()
        if closed:
            raise self._drop(closed)
        return dc.Health(service_ready=True, detail=f"connected to {self.address}")
