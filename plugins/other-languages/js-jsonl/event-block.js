// The WIT contract's event-block encoding, read in plain JavaScript.
//
// A sequenced block (what `deliver` gets) is, per event:
//
//   varint(seq) zigzag(time) varint(severity) varint(n)
//   varint(len(id)) (varint(len(key)) varint(len(value))){n}
//   varint(len(body)) text
//
// where `text` is the id, the keys and values and the body as one UTF-8
// run, cut at the given byte lengths. Nothing here imports a WIT binding,
// so it is tested natively (`node --test` in this directory).

export const SEVERITIES = ['debug', 'info', 'warning', 'minor', 'major', 'critical'];

export class BlockError extends Error {}

const decoder = new TextDecoder('utf-8', { fatal: true });

/** The unsigned LEB128 number at `pos`: [value, next pos]. A Number while
 * it fits in 49 bits (every length and seq in practice), else a BigInt. */
function varint(data, pos) {
  let result = 0;
  let shift = 0;
  for (;;) {
    if (pos >= data.length) throw new BlockError('the block ends inside a number');
    const byte = data[pos++];
    if (shift === 49) return bigVarint(data, pos - 8);
    result += (byte & 0x7f) * 2 ** shift;
    if (byte < 0x80) return [result, pos];
    shift += 7;
  }
}

function bigVarint(data, pos) {
  let result = 0n;
  let shift = 0n;
  for (;;) {
    if (pos >= data.length) throw new BlockError('the block ends inside a number');
    const byte = data[pos++];
    result |= BigInt(byte & 0x7f) << shift;
    if (byte < 0x80) return [result, pos];
    shift += 7n;
    if (shift > 63n) throw new BlockError('a number is longer than 10 bytes');
  }
}

function unzigzag(raw) {
  if (typeof raw === 'bigint') {
    const value = (raw >> 1n) ^ -(raw & 1n);
    return Number.isSafeInteger(Number(value)) ? Number(value) : value;
  }
  // Exact for raw < 2^49.
  return raw % 2 === 0 ? raw / 2 : -(raw + 1) / 2;
}

/** Each event of a sequenced block holding `count` events:
 * { seq, id, time, severity, attributes: [[key, value]], body }; an event
 * whose text (id, keys, values and body) is over `maxTextBytes` bytes is
 * given as { seq, textBytes } without decoding it. */
export function* sequenced(data, count, maxTextBytes = Infinity) {
  let pos = 0;
  for (let n = 0; n < count; n++) {
    let seq, raw, severity, pairs, idLen, bodyLen;
    [seq, pos] = varint(data, pos);
    [raw, pos] = varint(data, pos);
    [severity, pos] = varint(data, pos);
    if (severity >= SEVERITIES.length) throw new BlockError(`severity code ${severity}`);
    [pairs, pos] = varint(data, pos);
    [idLen, pos] = varint(data, pos);
    const lengths = [];
    for (let i = 0; i < pairs; i++) {
      let key, value;
      [key, pos] = varint(data, pos);
      [value, pos] = varint(data, pos);
      lengths.push([key, value]);
    }
    [bodyLen, pos] = varint(data, pos);
    const textBytes = idLen + bodyLen + lengths.reduce((sum, [k, v]) => sum + k + v, 0);
    if (textBytes > maxTextBytes) {
      if (pos + textBytes > data.length) throw new BlockError('a string runs past the block');
      pos += textBytes;
      yield { seq, textBytes };
      continue;
    }
    const take = (length) => {
      if (pos + length > data.length) throw new BlockError('a string runs past the block');
      let text;
      try {
        text = decoder.decode(data.subarray(pos, pos + length));
      } catch {
        throw new BlockError('a string is not UTF-8');
      }
      pos += length;
      return text;
    };
    const id = take(idLen);
    const attributes = lengths.map(([key, value]) => [take(key), take(value)]);
    const body = take(bodyLen);
    yield { seq, id, time: unzigzag(raw), severity: SEVERITIES[severity], attributes, body };
  }
  if (pos !== data.length) throw new BlockError('bytes follow the last event');
}
