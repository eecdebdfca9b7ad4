"""Native tests of the plugin's logic: `python3 -m unittest` here."""

import json
import unittest

import config
import event_block
import jsonl


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode(seq, event_id, time, severity, attributes, body):
    zigzag = (time << 1) ^ (time >> 63)
    head = varint(seq) + varint(zigzag & (2**64 - 1)) + varint(severity) + varint(len(attributes))
    text = event_id.encode()
    head += varint(len(event_id.encode()))
    for key, value in attributes:
        head += varint(len(key.encode())) + varint(len(value.encode()))
        text += key.encode() + value.encode()
    head += varint(len(body.encode()))
    return head + text + body.encode()


class EventBlockTest(unittest.TestCase):
    def test_reads_what_the_encoding_says(self):
        data = encode(7, "a-1", -5, 5, [("system", "\\PROD1"), ("ß", "日本")], "line 🙂") + encode(
            8, "", 2**63 - 1, 0, [], ""
        )
        events = list(event_block.sequenced(data, 2))
        self.assertEqual(events[0], (7, "a-1", -5, "critical", [("system", "\\PROD1"), ("ß", "日本")], "line 🙂"))
        self.assertEqual(events[1], (8, "", 2**63 - 1, "debug", [], ""))

    def test_an_event_over_the_limit_is_given_by_its_size(self):
        data = encode(9, "id", 0, 1, [], "x" * 500)
        (big,) = event_block.sequenced(data, 1, 100)
        self.assertEqual((big.seq, big.text_bytes), (9, 502))

    def test_refuses_a_truncated_block(self):
        data = encode(1, "id", 0, 1, [], "body")
        with self.assertRaises(event_block.BlockError):
            list(event_block.sequenced(data[:-2], 1))


class LineTest(unittest.TestCase):
    def test_one_line_of_json_even_for_extreme_times(self):
        text = jsonl.line("agent", "s", 1, "id", -(2**63), "info", [("k", "v\n")], "a\nb")
        self.assertTrue(text.endswith("\n") and text.count("\n") == 1)
        value = json.loads(text)
        self.assertIsNone(value["time"])
        self.assertEqual(value["time_us"], -(2**63))
        self.assertEqual(jsonl.rfc3339(0), "1970-01-01T00:00:00.000000Z")


class ConfigTest(unittest.TestCase):
    def test_problems_name_their_key(self):
        self.assertEqual(config.parse("{}")[1], [])
        self.assertEqual(config.parse('{"timout_ms": 1}')[1][0][0], "timout_ms")
        self.assertEqual(config.parse('{"timeout_ms": "x"}')[1][0][0], "timeout_ms")
        self.assertEqual(config.parse('{"timeout_ms": 0}')[1][0][0], "timeout_ms")
        self.assertTrue(config.parse("[]")[1])
        self.assertEqual(config.parse('{"max_line_bytes": 10}')[1][0][0], "max_line_bytes")
        self.assertEqual(config.parse("{}")[0]["max_line_bytes"], 102400)


if __name__ == "__main__":
    unittest.main()
