// The plugin's config: checked key by key, every problem named.

// 102 400 bytes: what Vector's `socket` source takes by default.
const DEFAULTS = { timeout_ms: 5000, max_line_bytes: 102400 };
const RANGES = {
  timeout_ms: [1, 600000, 'milliseconds'],
  max_line_bytes: [256, 16 * 1024 * 1024, 'bytes'],
};

export const SCHEMA = JSON.stringify({
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  type: 'object',
  additionalProperties: false,
  properties: {
    timeout_ms: {
      type: 'integer',
      minimum: 1,
      maximum: 600000,
      default: 5000,
      description: 'How long connecting (TCP and the TLS handshake) may take.',
    },
    max_line_bytes: {
      type: 'integer',
      minimum: 256,
      maximum: 16777216,
      default: 102400,
      description:
        "The longest line the receiver takes; a longer event is rejected (safd's dead letters) with its size.",
    },
  },
});

/** { config, problems }: problems is a list of { path, message }. */
export function parse(text) {
  let given;
  try {
    given = JSON.parse(text.trim() === '' ? '{}' : text);
  } catch (err) {
    return { config: null, problems: [{ path: '', message: `the config is not JSON: ${err.message}` }] };
  }
  if (given === null || typeof given !== 'object' || Array.isArray(given)) {
    return {
      config: null,
      problems: [{ path: '', message: 'the config is not a JSON object: write it as a table (`config = { … }`)' }],
    };
  }
  const problems = [];
  for (const key of Object.keys(given)) {
    if (!(key in DEFAULTS)) {
      problems.push({ path: key, message: `unknown key \`${key}\`: the keys are ${Object.keys(DEFAULTS).join(', ')}` });
    }
  }
  const config = { ...DEFAULTS };
  for (const [key, [least, most, unit]] of Object.entries(RANGES)) {
    const value = given[key] ?? DEFAULTS[key];
    if (!Number.isInteger(value)) {
      problems.push({ path: key, message: `is not a whole number of ${unit}` });
    } else if (value < least || value > most) {
      problems.push({ path: key, message: `is ${value}; give ${least} to ${most} (${unit})` });
    } else {
      config[key] = value;
    }
  }
  return { config: problems.length ? null : config, problems };
}
