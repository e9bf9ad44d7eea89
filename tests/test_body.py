"""The body rules of POST /send and POST /request (bridge.http.body)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from bridge.errors import BodyError
from bridge.http.body import is_json, parse_body, parse_json, parse_text
from bridge.upstream.lines import Lines, split_lines

CRLF = b"\r\n"
LF = b"\n"
BIG = 1 << 20

BARE_CR_MESSAGE = "the body contains a CR that is not followed by LF; lines end with LF or CRLF"


class BodyErrorAssertions(SynchronousTestCase):
    def assertBodyError(
        self, body: bytes, content_type: bytes | None, status: int, code: str,
        max_line_bytes: int = BIG,
    ) -> BodyError:
        with self.assertRaises(BodyError) as caught:
            parse_body(body, content_type, max_line_bytes, CRLF)
        self.assertEqual((caught.exception.status, caught.exception.code), (status, code))
        return caught.exception


class TextBodyTests(BodyErrorAssertions):
    def test_lf_lines_with_crlf_delimiter(self) -> None:
        self.assertEqual(parse_text(b"a\nb\n", BIG, CRLF), Lines(2, b"a\r\nb\r\n"))

    def test_lf_lines_with_lf_delimiter(self) -> None:
        self.assertEqual(parse_text(b"a\nb\n", BIG, LF), Lines(2, b"a\nb\n"))

    def test_missing_final_lf_still_ends_the_last_line(self) -> None:
        self.assertEqual(parse_text(b"a\nb", BIG, CRLF), Lines(2, b"a\r\nb\r\n"))
        self.assertEqual(parse_text(b"single", BIG, LF), Lines(1, b"single\n"))

    def test_cr_before_lf_is_removed(self) -> None:
        self.assertEqual(parse_text(b"a\r\nb\r\n", BIG, LF), Lines(2, b"a\nb\n"))
        self.assertEqual(parse_text(b"a\r\nb\r\n", BIG, CRLF), Lines(2, b"a\r\nb\r\n"))

    def test_mixed_endings_and_empty_line_crlf(self) -> None:
        self.assertEqual(
            parse_text(b"a\r\nb\n\nc", BIG, CRLF), Lines(4, b"a\r\nb\r\n\r\nc\r\n")
        )

    def test_mixed_endings_and_empty_line_lf(self) -> None:
        self.assertEqual(parse_text(b"a\r\nb\n\nc", BIG, LF), Lines(4, b"a\nb\n\nc\n"))

    def test_one_final_lf_adds_no_empty_line(self) -> None:
        self.assertEqual(parse_text(b"a\n", BIG, CRLF), Lines(1, b"a\r\n"))

    def test_second_final_lf_is_an_empty_line(self) -> None:
        self.assertEqual(parse_text(b"a\n\n", BIG, CRLF), Lines(2, b"a\r\n\r\n"))

    def test_empty_lines_inside_are_kept(self) -> None:
        self.assertEqual(parse_text(b"a\n\n\nb\n", BIG, LF), Lines(4, b"a\n\n\nb\n"))

    def test_lone_lf_is_one_empty_line(self) -> None:
        self.assertEqual(parse_text(b"\n", BIG, CRLF), Lines(1, b"\r\n"))
        self.assertEqual(parse_text(b"\r\n", BIG, LF), Lines(1, b"\n"))

    def test_nul_bytes_pass_through(self) -> None:
        self.assertEqual(parse_text(b"a\x00b\n\x00\n", BIG, CRLF), Lines(2, b"a\x00b\r\n\x00\r\n"))

    def test_non_utf8_bytes_pass_through(self) -> None:
        self.assertEqual(parse_text(b"\xff\xfe\n", BIG, LF), Lines(1, b"\xff\xfe\n"))

    def test_bare_cr_in_the_middle(self) -> None:
        error = self.assertBodyError(b"a\rb\n", None, 400, "bare_cr")
        self.assertEqual(error.message, BARE_CR_MESSAGE)

    def test_bare_cr_at_the_end(self) -> None:
        self.assertBodyError(b"a\r", None, 400, "bare_cr")

    def test_bare_cr_at_the_start(self) -> None:
        self.assertBodyError(b"\ra\n", None, 400, "bare_cr")

    def test_cr_cr_lf_has_one_bare_cr(self) -> None:
        self.assertBodyError(b"a\r\r\n", None, 400, "bare_cr")

    def test_lf_cr_has_a_bare_cr(self) -> None:
        self.assertBodyError(b"a\n\rb\n", None, 400, "bare_cr")

    def test_empty_body(self) -> None:
        error = self.assertBodyError(b"", None, 400, "empty_body")
        self.assertEqual(error.message, "the request body is empty; send at least one line")

    def test_line_too_long_names_the_line(self) -> None:
        error = self.assertBodyError(b"abc\ndefg\nhi\n", None, 413, "line_too_long", 3)
        self.assertEqual(error.message, "line 2 is 4 bytes; the limit is 3")

    def test_single_line_too_long(self) -> None:
        error = self.assertBodyError(b"abcd", None, 413, "line_too_long", 3)
        self.assertEqual(error.message, "line 1 is 4 bytes; the limit is 3")

    def test_line_of_exactly_the_limit_is_accepted(self) -> None:
        self.assertEqual(parse_text(b"abc\nabc", 3, LF), Lines(2, b"abc\nabc\n"))

    def test_line_ending_does_not_count_towards_the_limit(self) -> None:
        self.assertEqual(parse_text(b"abc\r\n", 3, LF), Lines(1, b"abc\n"))

    def test_long_body_of_short_lines_is_accepted(self) -> None:
        body = b"ab\n" * 100
        self.assertEqual(parse_text(body, 2, CRLF), Lines(100, b"ab\r\n" * 100))

    def test_size_is_the_payload_length(self) -> None:
        self.assertEqual(parse_text(b"a\nbc\n", BIG, CRLF).size, 7)


class JsonBodyTests(BodyErrorAssertions):
    def test_lines_with_crlf_delimiter(self) -> None:
        body = json.dumps({"lines": ["a", "", "b c"]}).encode()
        self.assertEqual(parse_json(body, BIG, CRLF), Lines(3, b"a\r\n\r\nb c\r\n"))

    def test_lines_with_lf_delimiter(self) -> None:
        body = json.dumps({"lines": ["a", "b"]}).encode()
        self.assertEqual(parse_json(body, BIG, LF), Lines(2, b"a\nb\n"))

    def test_unicode_is_written_as_utf8(self) -> None:
        body = json.dumps({"lines": ["caf\u00e9", "\u2603"]}).encode()
        self.assertEqual(
            parse_json(body, BIG, CRLF), Lines(2, b"caf\xc3\xa9\r\n\xe2\x98\x83\r\n")
        )

    def test_nul_passes_through(self) -> None:
        self.assertEqual(parse_json(b'{"lines": ["a\\u0000b"]}', BIG, LF), Lines(1, b"a\x00b\n"))

    def test_other_keys_are_ignored(self) -> None:
        self.assertEqual(
            parse_json(b'{"lines": ["x"], "note": 1}', BIG, LF), Lines(1, b"x\n")
        )

    def test_element_with_lf(self) -> None:
        error = self.assertBodyError(
            b'{"lines": ["ok", "a\\nb"]}', b"application/json", 400, "invalid_lines"
        )
        self.assertEqual(error.message, '"lines"[1] contains CR or LF')

    def test_element_with_cr(self) -> None:
        error = self.assertBodyError(
            b'{"lines": ["a\\rb"]}', b"application/json", 400, "invalid_lines"
        )
        self.assertEqual(error.message, '"lines"[0] contains CR or LF')

    def test_element_ending_in_crlf(self) -> None:
        self.assertBodyError(b'{"lines": ["a\\r\\n"]}', b"application/json", 400, "invalid_lines")

    def test_non_string_element(self) -> None:
        for element in (b"1", b"null", b"true", b'["a"]', b'{"a": "b"}'):
            error = self.assertBodyError(
                b'{"lines": ["a", ' + element + b"]}", b"application/json", 400, "invalid_lines"
            )
            self.assertEqual(error.message, '"lines"[1] is not a string')

    def test_missing_lines(self) -> None:
        error = self.assertBodyError(b'{"line": ["a"]}', b"application/json", 400, "invalid_lines")
        self.assertEqual(error.message, 'the JSON body must be an object with "lines"')

    def test_top_level_not_an_object(self) -> None:
        for body in (b'["a"]', b'"a"', b"1", b"null"):
            self.assertBodyError(body, b"application/json", 400, "invalid_lines")

    def test_lines_not_a_list(self) -> None:
        for value in (b'"a"', b"null", b"{}", b"1"):
            error = self.assertBodyError(
                b'{"lines": ' + value + b"}", b"application/json", 400, "invalid_lines"
            )
            self.assertEqual(error.message, '"lines" must be a list of strings')

    def test_empty_list(self) -> None:
        error = self.assertBodyError(b'{"lines": []}', b"application/json", 400, "empty_body")
        self.assertEqual(error.message, '"lines" is empty; send at least one line')

    def test_empty_body(self) -> None:
        error = self.assertBodyError(b"", b"application/json", 400, "empty_body")
        self.assertEqual(error.message, 'the request body is empty; send {"lines": [...]}')

    def test_invalid_json(self) -> None:
        for body in (b"nope", b'{"lines": ["a"]', b"{'lines': ['a']}", b" "):
            error = self.assertBodyError(body, b"application/json", 400, "invalid_json")
            self.assertTrue(
                error.message.startswith("the body is not valid JSON: "), error.message
            )

    def test_invalid_utf8(self) -> None:
        self.assertBodyError(b'{"lines": ["\xff"]}', b"application/json", 400, "invalid_json")

    def test_lone_surrogate(self) -> None:
        error = self.assertBodyError(
            b'{"lines": ["ok", "\\ud800"]}', b"application/json", 400, "invalid_lines"
        )
        self.assertEqual(error.message, '"lines"[1] is not valid Unicode text')

    def test_line_too_long_counts_utf8_bytes(self) -> None:
        body = json.dumps({"lines": ["abc", "\u00e9\u00e9"]}).encode()
        error = self.assertBodyError(body, b"application/json", 413, "line_too_long", 3)
        self.assertEqual(error.message, "line 2 is 4 bytes; the limit is 3")

    def test_line_of_exactly_the_limit_is_accepted(self) -> None:
        self.assertEqual(parse_json(b'{"lines": ["abc"]}', 3, CRLF), Lines(1, b"abc\r\n"))


class ContentTypeTests(SynchronousTestCase):
    JSON_BODY = b'{"lines": ["a", "b"]}'

    def test_json_media_types(self) -> None:
        for content_type in (
            b"application/json",
            b"application/json; charset=utf-8",
            b"Application/JSON",
            b"APPLICATION/JSON;CHARSET=UTF-8",
            b" application/json ; charset=utf-8",
        ):
            self.assertTrue(is_json(content_type), content_type)
            self.assertEqual(
                parse_body(self.JSON_BODY, content_type, BIG, CRLF), Lines(2, b"a\r\nb\r\n")
            )

    def test_other_media_types_are_text(self) -> None:
        for content_type in (
            None,
            b"",
            b"text/plain",
            b"application/json-seq",
            b"application/jsonx",
            b"text/json",
            b"application/octet-stream; note=application/json",
        ):
            self.assertFalse(is_json(content_type), content_type)
            self.assertEqual(
                parse_body(self.JSON_BODY, content_type, BIG, CRLF),
                Lines(1, self.JSON_BODY + CRLF),
            )


class SplitLinesTests(SynchronousTestCase):
    def test_inverse_of_framing(self) -> None:
        self.assertEqual(split_lines(b"a\r\n\r\nb\r\n", CRLF), [b"a", b"", b"b"])
        self.assertEqual(split_lines(b"a\n", LF), [b"a"])

    # Bytes without CR or LF: any line the text rules can carry unchanged.
    _line = st.binary(max_size=20).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))

    @settings(database=None, max_examples=200)
    @given(lines=st.lists(_line, min_size=1, max_size=20), final_lf=st.booleans(),
           ending=st.sampled_from([LF, CRLF]), delimiter=st.sampled_from([CRLF, LF]))
    def test_round_trip(
        self, lines: list[bytes], final_lf: bool, ending: bytes, delimiter: bytes
    ) -> None:
        body = ending.join(lines) + (ending if final_lf else b"")
        if body == b"":
            # [b""] without a final LF is an empty body, which is rejected.
            self.assertEqual(lines, [b""])
            with self.assertRaises(BodyError):
                parse_text(body, BIG, delimiter)
            return
        if not final_lf and lines[-1] == b"":
            # The final LF of "a\n" ends "a": the trailing empty line is not sent.
            expected = lines[:-1]
        else:
            expected = lines
        parsed = parse_text(body, BIG, delimiter)
        self.assertEqual(split_lines(parsed.payload, delimiter), expected)
        self.assertEqual(parsed.count, len(expected))
