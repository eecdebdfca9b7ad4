// `js-jsonl`: a safd destination plugin written in JavaScript.
//
// Each delivery is written as JSON lines (one event per line, see
// `jsonl.js`) to a receiver over TLS — Vector's `socket` source, Logstash's
// `tcp` input with the `json_lines` codec, Fluent Bit's `tcp` input —
// through safd's `tls` interface: safd makes the connection to the member's
// address (granted in `grants.tcp`) with the certificates of `grants.tls`,
// and the plugin writes plain bytes.
//
// Built by `cargo xtask plugins` with `jco componentize` (componentize-js):
// the export `destinationConnector` is the WIT interface
// `destination-connector`, its `Writer` class the `writer` resource. WIT
// errors are thrown: `{ tag: 'unavailable', val: 'why' }`.

import { connect } from 'safd:connector/tls@0.2.1';
import { emit } from 'safd:connector/log@0.2.1';
import { sequenced, BlockError } from './event-block.js';
import { line } from './jsonl.js';
import { parse, SCHEMA } from './config.js';

const VERSION = '0.1.0';
const encoder = new TextEncoder();
/** Bytes of JSON lines gathered before they are written. */
const PIECE = 64 * 1024;


const failure = (tag, val) => ({ tag, val });

/** The payload of an error a WIT import threw. */
const payloadOf = (err) => (err && err.payload !== undefined ? err.payload : err);

class Writer {
  constructor(text, endpoint) {
    const { config, problems } = parse(text);
    if (problems.length) {
      throw failure('fatal', problems.map((p) => (p.path ? `${p.path}: ${p.message}` : p.message)).join('; '));
    }
    this.timeoutMs = config.timeout_ms;
    this.maxLineBytes = config.max_line_bytes;
    /** Where lines are encoded: PIECE bytes, then room for one more line. */
    this.buffer = new Uint8Array(PIECE + this.maxLineBytes);
    this.address = endpoint.address;
    this.agent = '';
    this.connection = null;
  }

  connect() {
    if (this.connection) return this.connection;
    try {
      this.connection = connect(this.address, this.timeoutMs);
    } catch (err) {
      const reason = payloadOf(err);
      // safd's texts name the grant or the file to fix.
      if (reason.tag === 'denied') throw failure('unauthorized', reason.val);
      if (reason.tag === 'settings') throw failure('fatal', reason.val);
      throw failure('unavailable', String(reason.val ?? reason));
    }
    emit('info', `connected to ${this.address}`, []);
    return this.connection;
  }

  lost(why) {
    this.connection = null;
    return failure('unavailable', `connection to ${this.address} lost: ${why}`);
  }

  /** Why the receiver's side ended, or null while it is open (a read says
   * so at once; what the receiver sends is of no interest). */
  peerClosed() {
    try {
      this.connection.input.read(4096n);
      return null;
    } catch (err) {
      const reason = payloadOf(err);
      return reason.tag === 'closed' ? 'the receiver closed it' : 'it failed';
    }
  }

  /** Write `bytes` whole (waiting for room as the stream asks); flushed
   * by `flush`. */
  write(bytes) {
    const output = this.connection.output;
    try {
      let at = 0;
      while (at < bytes.length) {
        const room = Number(output.checkWrite());
        if (room === 0) {
          output.subscribe().block();
          continue;
        }
        const end = Math.min(bytes.length, at + room);
        output.write(bytes.subarray(at, end));
        at = end;
      }
    } catch (err) {
      throw this.lost(`write failed (${payloadOf(err).tag ?? err})`);
    }
  }

  flush() {
    try {
      this.connection.output.blockingFlush();
    } catch (err) {
      throw this.lost(`flush failed (${payloadOf(err).tag ?? err})`);
    }
  }

  register(info) {
    this.agent = info.agentId;
    this.connect();
    // A line receiver keeps no positions: nothing held, nothing to ask.
    return { highWater: [], serviceReady: true, catchUp: undefined };
  }

  deliver(batches) {
    this.connect();
    const closed = this.peerClosed();
    if (closed) throw this.lost(closed);
    // Lines are encoded straight into one buffer of the writer's, written
    // every PIECE bytes: no allocation per line. (A typed array per line
    // kept its bytes outside the engine's garbage-collected heap, and under
    // sustained load they filled the 64 MiB limit before a collection.)
    // An event longer than a line may be is rejected before its text is
    // decoded (a JSON line is never shorter than the text).
    let used = 0;
    const acknowledged = [];
    const rejected = [];
    const reject = (stream, seq, bytes) =>
      rejected.push({
        stream,
        seq: BigInt(seq),
        reason: `a line of ${bytes} bytes or more is longer than max_line_bytes (${this.maxLineBytes})`,
      });
    for (const batch of batches) {
      let last = null;
      try {
        for (const event of sequenced(batch.events.bytes, batch.events.count, this.maxLineBytes)) {
          last = event.seq;
          if (event.textBytes !== undefined) {
            reject(batch.stream, event.seq, event.textBytes);
            continue;
          }
          const text = line(this.agent, batch.stream, event);
          const room = this.buffer.subarray(used, used + this.maxLineBytes);
          const { read, written } = encoder.encodeInto(text, room);
          if (read < text.length) {
            reject(batch.stream, event.seq, this.maxLineBytes + 1);
            continue;
          }
          used += written;
          if (used >= PIECE) {
            this.write(this.buffer.subarray(0, used));
            used = 0;
          }
        }
      } catch (err) {
        if (err instanceof BlockError) throw failure('rejected', `stream ${batch.stream}: ${err.message}`);
        throw err;
      }
      if (last !== null) acknowledged.push({ stream: batch.stream, seq: BigInt(last) });
    }
    if (used) this.write(this.buffer.subarray(0, used));
    this.flush();
    return { acknowledged, rejected };
  }

  probe() {
    this.connect();
    const closed = this.peerClosed();
    if (closed) throw this.lost(closed);
    return { serviceReady: true, detail: `connected to ${this.address}` };
  }
}

export const destinationConnector = {
  describe() {
    return {
      name: 'js-jsonl',
      version: VERSION,
      kind: 'destination',
      summary:
        'Writes events as JSON lines over TLS to a line-reading receiver (Vector, Logstash, Fluent Bit); written in JavaScript.',
      configSchema: SCHEMA,
    };
  },
  acknowledgementKind() {
    // The receiver does not confirm lines: written and flushed is all this
    // transport can say.
    return 'transport-write';
  },
  validateConfig(text) {
    const { problems } = parse(text);
    if (problems.length) throw problems;
  },
  Writer,
};
