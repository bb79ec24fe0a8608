"""YAML with lines (``config/source.py``): where every key, item and value was written, the
mistakes YAML itself lets through (duplicate keys, tags, exponents), the converters' error
texts, and ``Section``'s located reading of a mapping.

Nothing here knows the edge-agent schema: the documents are small and made up. What the whole
schema reports for a config file is in ``test_schema.py`` and its ``cases/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from edge_agent.config.source import (Node, Problem, Report, Section, boolean, choice, compose, describe,
                                      did_you_mean, duration, identifier, integer, number, number_pair, path,
                                      plain, size, string)


def composed(text: str) -> tuple[Node | None, list[str]]:
    report = Report("site.yaml")
    root = compose(text, report)
    return root, [str(p) for p in report.problems]


def error(convert: Callable[[Any], Any], value: Any) -> str:
    with pytest.raises(ValueError) as raised:
        convert(value)
    return str(raised.value)


# -- lines --------------------------------------------------------------------------------------
def test_every_key_item_and_value_keeps_its_line() -> None:
    root, problems = composed("""\
# a comment first

gateway:
  id: gw-1   # trailing comment
  site: >
    folded text
buses:
  - name: a
    port: 502

  - {name: b, port: 503}
""")
    assert problems == [] and root is not None
    assert root.line == 3 and root.key_lines == {"gateway": 3, "buses": 7}
    gateway = root.value["gateway"]
    assert gateway.line == 4 and gateway.key_lines == {"id": 4, "site": 5}  # a mapping starts at its first key
    assert (gateway.value["id"].line, gateway.value["site"].line) == (4, 5)
    buses = root.value["buses"]
    assert buses.line == 8 and [item.line for item in buses.value] == [8, 11]
    assert buses.value[0].key_lines == {"name": 8, "port": 9} and buses.value[1].key_lines == {"name": 11, "port": 11}
    assert plain(root) == {"gateway": {"id": "gw-1", "site": "folded text\n"},
                           "buses": [{"name": "a", "port": 502}, {"name": "b", "port": 503}]}


def test_an_empty_file_or_one_of_comments_is_no_document_and_no_problem() -> None:
    assert composed("") == (None, [])
    assert composed("# nothing yet\n\n") == (None, [])


# -- what safe_load would let through -----------------------------------------------------------
def test_duplicate_keys_are_reported_at_the_second_naming_the_first() -> None:
    root, problems = composed("a: 1\nb:\n  c: 2\n  c: 3\na: 4\n")
    assert sorted(problems) == ["site.yaml:4: b.c: duplicate key 'c' (first at line 3)",
                                "site.yaml:5: a: duplicate key 'a' (first at line 1)"]
    assert root is not None and plain(root) == {"a": 4, "b": {"c": 3}}  # the last one is kept, and said


def test_duplicate_keys_inside_list_items_name_the_item() -> None:
    _, problems = composed("devices:\n  - name: a\n  - name: b\n    name: c\n")
    assert problems == ["site.yaml:4: devices[1].name: duplicate key 'name' (first at line 3)"]


def test_merge_keys_share_a_mapping_and_explicit_keys_win_without_a_duplicate() -> None:
    root, problems = composed("defaults: &d {port: 502, timeout: 1s}\nbus:\n  <<: *d\n  port: 503\n")
    assert problems == [] and root is not None
    bus = root.value["bus"]
    assert plain(bus) == {"port": 503, "timeout": "1s"}
    assert bus.key_lines == {"port": 4, "timeout": 1}  # a merged key points where it was written


def test_an_anchor_used_twice_is_converted_once_and_an_alias_to_itself_is_a_problem() -> None:
    root, problems = composed("a: &x {k: 1}\nb: *x\nc: &c [*c]\n")
    assert root is not None
    assert root.value["a"] is root.value["b"]  # converted once
    assert problems == ["site.yaml:3: c[0]: this value contains itself (an alias inside its own anchor); "
                        "write the value out"]
    assert root.value["c"].value[0].value is None  # the cycle is cut, nothing follows it forever


def test_keys_that_are_not_plain_names_are_refused_with_the_fix() -> None:
    root, problems = composed("1: a\nnull: b\n'2': c\n")
    assert problems == ["site.yaml:1: 1: key '1' is not a plain name; quote it or rename it",
                        "site.yaml:2: null: key 'null' is not a plain name; quote it or rename it"]
    assert root is not None and plain(root) == {"2": "c"}


def test_yaml_1_1_reads_yes_as_true_and_an_exponent_without_a_dot_as_text() -> None:
    root, _ = composed("a: yes\nb: off\nc: 1e3\nd: 1.0e+3\ne: 0x10\nf: ~\ng: '5'\n")
    assert root is not None
    assert plain(root) == {"a": True, "b": False, "c": "1e3", "d": 1000.0, "e": 16, "f": None, "g": "5"}
    assert error(number, "1e3") == ("expected a number, got a string ('1e3'); YAML 1.1 reads this exponent "
                                    "form as text: write 1000.0")


def test_no_object_is_made_from_a_python_tag(tmp_path: Path) -> None:
    """SafeLoader: a tag naming Python code is refused or read as plain data, never run."""
    marker = tmp_path / "ran"
    root, problems = composed(f"a: !!python/object/apply:os.system ['touch {marker}']\n"
                              "b: !!python/name:os.system ''\n")
    assert not marker.exists()
    assert root is not None and plain(root)["a"] == [f"touch {marker}"]
    assert problems == ["site.yaml:2: b: cannot read this value: could not determine a constructor for the tag "
                        "'tag:yaml.org,2002:python/name:os.system'"]


def test_an_unknown_tag_is_reported_once_and_the_raw_text_kept() -> None:
    root, problems = composed("a: !secret swordfish\n")
    assert problems == ["site.yaml:1: a: cannot read this value: could not determine a constructor for the tag "
                        "'!secret'"]
    assert root is not None and plain(root) == {"a": "swordfish"}


@pytest.mark.parametrize("value", ["!!int abc", "!!bool maybe", "!!timestamp 2024-13-45"])
def test_a_standard_tag_on_text_it_cannot_read_is_a_problem_not_a_traceback(value: str) -> None:
    root, problems = composed(f"gateway:\n  id: {value}\n")
    assert len(problems) == 1 and problems[0].startswith("site.yaml:2: gateway.id: "), problems


# -- what YAML cannot read ---------------------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    ("a: [1, 2\nb: 3\n", "site.yaml:2: YAML syntax error: expected ',' or ']', but got ':' "
                         "(while parsing a flow sequence started on line 1)"),
    ("a: {x: 1\n\nb: 3\n", "site.yaml:3: YAML syntax error: expected ',' or '}', but got ':' "
                           "(while parsing a flow mapping started on line 1)"),
    ("a: 'abc\nb: 3\n", "site.yaml:3: YAML syntax error: found unexpected end of stream "
                        "(while scanning a quoted scalar started on line 1)"),
    ("a: b: c\n", "site.yaml:1: YAML syntax error: mapping values are not allowed here"),
    ("a: 1\n---\nb: 2\n", "site.yaml:2: YAML syntax error: expected a single document in the stream but found "
                          "another document"),
], ids=["unclosed bracket", "unclosed brace", "unclosed quote", "colon in a value", "two documents"])
def test_syntax_errors_name_the_line_and_where_an_unclosed_bracket_or_quote_began(text: str, expected: str) -> None:
    assert composed(text) == (None, [expected])


def test_a_pasted_terminal_colour_code_is_named_on_its_line() -> None:
    assert composed("a: 1\nb: \x1b[31mred\n") == (None, [
        "site.yaml:2: control character 0x1b is not allowed in YAML: delete it "
        "(an escape: a terminal colour code copied with the text?)"])
    assert composed("a: x\x00\n") == (None, ["site.yaml:1: control character 0x00 is not allowed in YAML: delete it"])


def test_nesting_too_deep_to_read_is_a_problem_not_a_crash() -> None:
    assert composed("a: " + "[" * 5000 + "]" * 5000 + "\n") == (
        None, ["site.yaml: nested too deeply to read (hundreds of levels of brackets)"])


# -- problems and reports ---------------------------------------------------------------------
def test_a_problem_reads_file_line_key_path_message() -> None:
    assert str(Problem("site.yaml", 14, "mqtt.port", "bad")) == "site.yaml:14: mqtt.port: bad"
    assert str(Problem("site.yaml", None, "mqtt", "missing")) == "site.yaml: mqtt: missing"
    assert str(Problem("site.yaml", 2, "", "YAML syntax error: x")) == "site.yaml:2: YAML syntax error: x"
    assert str(Problem("site.yaml", 3, "mqtt.tls.ca_file", "not found", warning=True)) == \
        "site.yaml:3: mqtt.tls.ca_file: warning: not found"


def test_a_report_tells_whether_a_part_just_read_added_problems() -> None:
    report = Report("site.yaml")
    mark = report.mark()
    assert not report.since(mark)
    report.add(4, "a.b", "bad")
    assert report.since(mark) and not report.since(report.mark())
    assert report.problems == [Problem("site.yaml", 4, "a.b", "bad")]


# -- words for messages -------------------------------------------------------------------------
def test_did_you_mean_the_closest_option_a_case_slip_first() -> None:
    assert did_you_mean("prot", ["host", "port", "protocol"]) == " (did you mean 'port'?)"
    assert did_you_mean("PROTOCOL", ["port", "protocol"]) == " (did you mean 'protocol'?)"
    assert did_you_mean("Host", iter(["hosts", "host"])) == " (did you mean 'host'?)"  # any iterable
    assert did_you_mean("baud", ["host", "port"]) == ""


@pytest.mark.parametrize(("value", "text"), [
    (None, "null"), (True, "a boolean (true)"), (False, "a boolean (false)"), (3, "an integer (3)"),
    (2.5, "a number (2.5)"), ("9600", "a string ('9600')"), ({}, "a mapping"), ([], "a list"),
    (b"x", "a bytes"),
])
def test_describe_names_a_wrong_value_as_yaml_wrote_it(value: Any, text: str) -> None:
    assert describe(value) == text


# -- converters -------------------------------------------------------------------------------------
def test_integer_refuses_booleans_floats_and_text_and_gives_the_range_and_why() -> None:
    unit = integer(1, 247, "Modbus unit ids")
    assert unit(1) == 1 and unit(247) == 247
    assert error(unit, 0) == "0 is outside 1..247 (Modbus unit ids)"
    assert error(integer(1, 10), 11) == "11 is outside 1..10"
    assert error(unit, True) == "expected an integer, got a boolean (true)"
    assert error(unit, 5.0) == "expected an integer, got a number (5.0)"
    assert error(unit, "5") == "expected an integer, got a string ('5')"


def test_number_and_number_pair() -> None:
    assert number(3) == 3.0 and isinstance(number(3), float) and number(-2.5) == -2.5
    assert error(number, True) == "expected a number, got a boolean (true)"
    assert error(number, None) == "expected a number, got null"
    assert number_pair([-1, 20.5]) == (-1.0, 20.5)
    assert error(number_pair, [1]) == "expected [low, high], two numbers, got a list of 1"
    assert error(number_pair, "1,2") == "expected [low, high], two numbers, got a string ('1,2')"
    assert error(number_pair, [1, "a"]) == "expected a number, got a string ('a')"


def test_boolean_is_true_or_false_only() -> None:
    assert boolean(True) is True and boolean(False) is False
    assert error(boolean, "yes") == "expected true or false, got a string ('yes')"  # quoted: not YAML's yes
    assert error(boolean, 1) == "expected true or false, got an integer (1)"


def test_string_and_identifier() -> None:
    assert string(" x ") == " x "
    assert error(string, "  ") == "must not be empty"
    assert error(string, 5) == "expected a string, got an integer (5)"
    name = identifier("it names topics")
    assert name("gw-1.a_B9") == "gw-1.a_B9"
    assert error(name, "gw/1") == "'gw/1' may only use letters, digits, '_', '.' and '-' (it names topics)"
    assert error(identifier(), "gw 1") == "'gw 1' may only use letters, digits, '_', '.' and '-'"
    assert error(name, "") == "must not be empty"


def test_choice_of_words_suggests_and_of_numbers_is_strict() -> None:
    parity = choice(("even", "odd", "none"), "parity")
    assert parity("odd") == "odd"
    assert error(parity, "Even") == "unknown parity 'Even' (did you mean 'even'?)"
    assert error(parity, "evn") == "unknown parity 'evn' (did you mean 'even'?)"
    assert error(parity, "zzz") == "unknown parity 'zzz'; use one of even, odd, none"
    assert error(parity, 1) == "expected a parity (even, odd, none), got an integer (1)"
    baud = choice((9600, 19200), "baud rate")
    assert baud(9600) == 9600
    assert error(baud, 4800) == "4800 is not a supported baud rate; use one of 9600, 19200"
    assert error(baud, "9600") == "expected an integer, got a string ('9600')"
    assert error(baud, True) == "expected an integer, got a boolean (true)"


def test_durations_carry_a_unit_and_stay_in_range() -> None:
    within_a_day = duration(1, 86400)
    assert within_a_day("2h") == 7200.0 and within_a_day("500 s") == 500.0 and within_a_day("1.5m") == 90.0
    assert error(within_a_day, "0.01ms") == "0.01ms is outside 1s..1d"
    assert error(within_a_day, "90d") == "90d is outside 1s..1d"
    assert error(duration(0.01, 60), "2m") == "2m is outside 10ms..1m"
    assert error(within_a_day, "5 parsecs") == "unknown time unit 'parsecs'; use one of ms, s, m, min, h, d"
    assert error(within_a_day, "abc") == "'abc' is not a duration; write a number and a unit, e.g. '10s' or '500ms'"
    assert error(within_a_day, True) == "expected a duration such as '10s', got bool"


@pytest.mark.parametrize(("lo", "hi", "bare", "hint"), [
    (1, 86400, 60, "60s"), (1, 86400, "60", "60s"),  # seconds first when they fit
    (0.001, 10, 200, "200ms"),  # 200 s would be past the limit: milliseconds fit
    (0.01, 60, "300", "300ms"),
    (1, 86400, 0.5, "0.5m"),  # half a second is too short, half a minute fits
    (0, 10, 0, "0s"),
    (0.001, 0.002, 500, "500s"),  # nothing fits: seconds, and the range check comes next
])
def test_a_bare_number_duration_suggests_a_unit_that_fits_the_range(lo: float, hi: float, bare: Any,
                                                                   hint: str) -> None:
    assert error(duration(lo, hi), bare) == f"has no time unit (did you mean '{hint}'?)"


def test_sizes_carry_a_unit_a_case_slip_is_named_and_the_minimum_holds() -> None:
    at_least_1mib = size(1024**2)
    assert at_least_1mib("64MB") == 64_000_000 and at_least_1mib("1 GiB") == 1024**3
    assert at_least_1mib("1.5MiB") == 1_572_864
    assert error(at_least_1mib, "64mib") == "unknown size unit 'mib' (did you mean '64MiB'?)"
    assert error(at_least_1mib, "64 parsecs") == \
        "unknown size unit 'parsecs'; use one of B, KB, MB, GB, TB, KiB, MiB, GiB, TiB"
    assert error(at_least_1mib, 250) == "has no size unit (did you mean '250B' or '250MiB'?)"
    assert error(at_least_1mib, "250") == "has no size unit (did you mean '250MiB'?)"
    assert error(at_least_1mib, "0.5MiB") == "0.5MiB is below the minimum of 1MiB"
    assert error(at_least_1mib, "x") == "'x' is not a size; write a number and a unit, e.g. '512MiB'"


def test_a_relative_path_is_taken_from_the_config_files_folder() -> None:
    beside = path(Path("/etc/edge-agent"))
    assert beside("keys/platform.pub") == Path("/etc/edge-agent/keys/platform.pub")
    assert beside("/var/lib/edge-agent/buffer.db") == Path("/var/lib/edge-agent/buffer.db")
    assert error(beside, "") == "must not be empty"


# -- Section ------------------------------------------------------------------------------------
DOC = """\
mqtt:
  host: broker.example
  prot: 5
  password: hunter2
  keepalive:
  port: "1883"
  tls: [ca.pem]
buses:
extras: {}
"""


def mqtt_section() -> tuple[Report, Section, Section]:
    report = Report("site.yaml")
    root = compose(DOC, report)
    assert root is not None and report.problems == []
    top = Section(report, root, "", None, ("mqtt", "buses", "devices", "extras"))
    mqtt = top.section("mqtt", ("host", "port", "protocol", "keepalive", "tls", "client_id", "password_file"),
                       secrets={"password": "password_file"})
    assert mqtt is not None
    return report, top, mqtt


def problems_of(report: Report) -> list[str]:
    return [str(p) for p in report.problems]


def test_unknown_keys_get_a_suggestion_and_inline_secrets_the_file_key_up_front() -> None:
    report, _, _ = mqtt_section()
    assert problems_of(report) == [
        "site.yaml:3: mqtt.prot: unknown key 'prot' (did you mean 'port'?)",
        "site.yaml:4: mqtt.password: secrets are read from files, never written inline: use password_file",
    ]
    assert "hunter2" not in "".join(problems_of(report))  # the secret itself is never repeated


def test_an_unknown_key_without_a_close_match_lists_the_allowed_ones() -> None:
    report = Report("site.yaml")
    root = compose("gateway: {zzz: 1}\n", report)
    assert root is not None
    Section(report, root, "", None, ("gateway",)).section("gateway", ("id", "site"), noun="gateway key")
    assert problems_of(report) == ["site.yaml:1: gateway.zzz: unknown gateway key 'zzz' (expected one of: id, site)"]


def test_get_converts_or_reports_at_the_values_line_and_goes_on() -> None:
    report, _, mqtt = mqtt_section()
    mark = report.mark()
    assert mqtt.get("host", string) == "broker.example"
    assert mqtt.get("port", integer(1, 65535), 1883) is None  # invalid: reported, not defaulted
    assert mqtt.get("protocol", choice(("3.1.1", "5"), "protocol"), "3.1.1") == "3.1.1"  # absent: the default
    assert mqtt.get("keepalive", duration(1, 3600), 30.0) == 30.0  # 'keepalive:' alone: the default
    assert problems_of(report)[mark:] == ["site.yaml:6: mqtt.port: expected an integer, got a string ('1883')"]


def test_a_missing_required_key_is_reported_where_its_mapping_is_introduced() -> None:
    report, _, mqtt = mqtt_section()
    mark = report.mark()
    assert mqtt.get("client_id", string) is None
    assert mqtt.get("keepalive", duration(1, 3600)) is None
    assert problems_of(report)[mark:] == ["site.yaml:1: mqtt.client_id: required key is missing",
                                          "site.yaml:5: mqtt.keepalive: required key has no value"]


def test_given_line_of_and_key_line() -> None:
    _, top, mqtt = mqtt_section()
    assert mqtt.given("host") and not mqtt.given("keepalive") and not mqtt.given("client_id")
    assert mqtt.line_of("port") == 6  # the value's line
    assert mqtt.line_of("keepalive") == 5  # null: the key's line
    assert mqtt.line_of("client_id") == 1  # absent: the section's
    assert top.key_line("mqtt") == 1 and mqtt.key_line("host") == 2 and top.key_line("devices") is None
    assert mqtt.sub("tls") == "mqtt.tls" and top.sub("buses") == "buses"


def test_a_section_or_list_of_the_wrong_shape_is_reported_once() -> None:
    report, top, mqtt = mqtt_section()
    mark = report.mark()
    assert mqtt.section("tls", ("enabled",)) is None
    assert mqtt.items("host") is None
    assert top.items("buses", required=True) is None  # 'buses:' alone
    assert top.items("devices", required=True) is None  # absent
    assert top.section("gateway", ("id",), required=True) is None
    assert top.section("devices", ("x",)) is None  # absent and optional: nothing to say
    extras = top.section("extras", ("a",))
    assert extras is not None and extras.values == {}
    assert problems_of(report)[mark:] == [
        "site.yaml:7: mqtt.tls: expected a mapping, got a list",
        "site.yaml:2: mqtt.host: expected a list, got a string ('broker.example')",
        "site.yaml:8: buses: required key has no value (write [] for none)",
        "site.yaml: devices: required key is missing",
        "site.yaml: gateway: required key is missing",
    ]


def test_section_of_something_that_is_not_a_mapping() -> None:
    report = Report("site.yaml")
    assert Section.of(report, Node([1, 2], 3), "devices[0]", 3, ("name",)) is None
    assert problems_of(report) == ["site.yaml:3: devices[0]: expected a mapping, got a list"]


def test_get_hands_a_converter_plain_lists_and_mappings() -> None:
    report = Report("site.yaml")
    root = compose("valid: [-1, 20]\nopts: {a: 1}\n", report)
    assert root is not None
    s = Section(report, root, "", None, ("valid", "opts"))
    assert s.get("valid", number_pair) == (-1.0, 20.0)
    assert s.get("opts", lambda v: v) == {"a": 1}


def test_a_value_that_contains_itself_is_a_problem_not_a_traceback() -> None:
    report = Report("site.yaml")
    root = compose("gateway:\n  id: &a [*a]\n", report)
    assert root is not None
    assert [str(p) for p in report.problems] == [
        "site.yaml:2: gateway.id[0]: this value contains itself (an alias inside its own anchor); write the value out"]
    assert plain(root) == {"gateway": {"id": [None]}}  # plain() ends
