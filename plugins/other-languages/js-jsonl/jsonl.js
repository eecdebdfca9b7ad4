// One event as one JSON line: the shape of the management protocol's
// events (docs/protocol.md), with the agent and the stream on every line so
// that a receiver needs no session state. The same lines as python-jsonl.

/** RFC 3339 with microseconds, or null outside years 1–9999 (the line
 * keeps `time_us` either way). */
export function rfc3339(micros) {
  if (typeof micros === 'bigint') return null;
  const millis = Math.floor(micros / 1000);
  const date = new Date(millis);
  const year = date.getUTCFullYear();
  if (Number.isNaN(year) || year < 1 || year > 9999) return null;
  const micro = String(micros - millis * 1000).padStart(3, '0');
  const iso = date.toISOString(); // YYYY-MM-DDTHH:MM:SS.mmmZ
  return `${iso.slice(0, 23)}${micro}Z`;
}

export function line(agent, stream, event) {
  const time = rfc3339(event.time);
  return (
    `{"agent":${JSON.stringify(agent)},"stream":${JSON.stringify(stream)},` +
    `"seq":${event.seq},"id":${JSON.stringify(event.id)},` +
    `"time":${time === null ? 'null' : JSON.stringify(time)},"time_us":${event.time},` +
    `"severity":"${event.severity}","attributes":${JSON.stringify(event.attributes)},` +
    `"body":${JSON.stringify(event.body)}}\n`
  );
}
