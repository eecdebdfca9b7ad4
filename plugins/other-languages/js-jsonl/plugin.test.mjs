// Native tests of the plugin's logic: `node --test` here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sequenced, BlockError } from './event-block.js';
import { line, rfc3339 } from './jsonl.js';
import { parse } from './config.js';

function varint(n) {
  let big = BigInt(n);
  const out = [];
  for (;;) {
    const byte = Number(big & 0x7fn);
    big >>= 7n;
    if (big) out.push(byte | 0x80);
    else return out.push(byte), out;
  }
}

function encode(seq, id, time, severity, attributes, body) {
  const t = BigInt(time);
  const zigzag = BigInt.asUintN(64, (t << 1n) ^ (t >> 63n));
  const enc = new TextEncoder();
  const head = [...varint(seq), ...varint(zigzag), ...varint(severity), ...varint(attributes.length), ...varint(enc.encode(id).length)];
  let text = [...enc.encode(id)];
  for (const [k, v] of attributes) {
    head.push(...varint(enc.encode(k).length), ...varint(enc.encode(v).length));
    text.push(...enc.encode(k), ...enc.encode(v));
  }
  head.push(...varint(enc.encode(body).length));
  return [...head, ...text, ...enc.encode(body)];
}

test('reads what the encoding says, extreme times included', () => {
  const data = Uint8Array.from([
    ...encode(7, 'a-1', -5, 5, [['system', '\\PROD1'], ['ß', '日本']], 'line 🙂'),
    ...encode(8, '', 2n ** 63n - 1n, 0, [], ''),
  ]);
  const events = [...sequenced(data, 2)];
  assert.deepEqual(events[0], { seq: 7, id: 'a-1', time: -5, severity: 'critical', attributes: [['system', '\\PROD1'], ['ß', '日本']], body: 'line 🙂' });
  assert.equal(events[1].time, 2n ** 63n - 1n);
  assert.throws(() => [...sequenced(data.subarray(0, data.length - 1), 2)], BlockError);
  // Over the limit: the size, not the text.
  const [big] = [...sequenced(Uint8Array.from(encode(9, 'id', 0, 1, [], 'x'.repeat(500))), 1, 100)];
  assert.deepEqual(big, { seq: 9, textBytes: 502 });
});

test('one line of JSON, the same as the Python plugin writes', () => {
  const text = line('agent', 's', { seq: 1, id: 'id', time: -(2n ** 63n), severity: 'info', attributes: [['k', 'v\n']], body: 'a\nb' });
  assert.equal(text.split('\n').length, 2);
  const value = JSON.parse(text);
  assert.equal(value.time, null);
  assert.equal(rfc3339(0), '1970-01-01T00:00:00.000000Z');
  assert.equal(rfc3339(1710119830002311), '2024-03-11T01:17:10.002311Z');
});

test('config problems name their key', () => {
  assert.deepEqual(parse('{}').problems, []);
  assert.equal(parse('{"timout_ms": 1}').problems[0].path, 'timout_ms');
  assert.equal(parse('{"timeout_ms": "x"}').problems[0].path, 'timeout_ms');
  assert.ok(parse('[]').problems.length);
  assert.equal(parse('{"max_line_bytes": 10}').problems[0].path, 'max_line_bytes');
  assert.equal(parse('{}').config.max_line_bytes, 102400);
});
