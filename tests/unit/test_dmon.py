"""Tests for the header-driven `nvidia-smi dmon` parser on every real dmon capture in the fixtures."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainmon_tui.model import GpuSample
from trainmon_tui.parsers.dmon import DMON_ARGV, DmonParser, normalise_pci_bus_id, parse_dmon

FIXTURES = Path(__file__).parent.parent / "fixtures"
DMON = FIXTURES / "dmon"


def read(name: str) -> str:
    return (DMON / name).read_text(encoding="utf-8")


def unquote_markdown(text: str) -> str:
    """Undo the markdown blockquote a GitHub issue wrapped this capture in (`> ` prefix, `\\#` escape)."""
    return "\n".join(line.removeprefix("> ").replace("\\#", "#", 1) for line in text.splitlines())


def test_blackwell_pucm_values_per_gpu() -> None:
    samples = parse_dmon(read("dmon_s_pucm_blackwell_4gpu_driver595.txt"))
    assert [s.gpu for s in samples] == [0, 1, 2, 3]
    gpu0 = samples[0]
    assert gpu0.power_w == 294
    assert gpu0.gpu_temp_c == 81
    assert gpu0.mem_temp_c is None
    assert gpu0.sm_pct == 98
    assert gpu0.mem_util_pct == 57
    assert gpu0.mem_clock_mhz == 13365
    assert gpu0.sm_clock_mhz == 1897
    assert gpu0.fb_used_mib == 90538
    assert dict(gpu0.extra) == {"enc": 0, "dec": 0, "jpg": 0, "ofa": 0, "bar1": 4, "ccpm": 0}
    assert gpu0.printed_time is None
    assert [s.fb_used_mib for s in samples] == [90538, 90536, 48243, 48209]
    assert [s.sm_clock_mhz for s in samples] == [1897, 2017, 1192, 1200]


def test_default_535_layout_with_trailing_spaces_and_mixed_gpus() -> None:
    samples = parse_dmon(read("dmon_default_535_3gpu_geforce_mixed_trailing_space.txt"))
    assert [(s.gpu, s.power_w, s.gpu_temp_c, s.mem_clock_mhz) for s in samples] == [
        (0, 119, 59, 6800),
        (1, 159, 59, 9251),
        (2, 219, 74, 9251),
    ]
    assert all(s.mem_temp_c is None and s.sm_pct == 100 for s in samples)
    # -s puc prints no framebuffer column: unknown, not zero.
    assert all(s.fb_used_mib is None for s in samples)


def test_ramp_up_follows_power_and_utilisation() -> None:
    samples = parse_dmon(read("dmon_default_gtemp_mtemp_ramp_up.txt"))
    assert len(samples) == 9
    assert [s.power_w for s in samples] == [70, 68, 69, 270, 274, 278, 279, 277, 281]
    assert [s.sm_pct for s in samples] == [5, 11, 3, 10, 75, 86, 99, 86, 85]
    assert samples[-1].sm_clock_mhz == 1740


def test_legacy_temp_column_is_gpu_temperature() -> None:
    text = read("dcgm_go_dmon_sample_legacy_temp_header.txt")
    samples = parse_dmon(text)
    # The "Started host engine ..." line before the header is not a row.
    assert len(samples) == 2
    sample = samples[0]
    assert (sample.power_w, sample.gpu_temp_c, sample.mem_temp_c) == (43, 48, None)
    assert (sample.mem_clock_mhz, sample.sm_clock_mhz) == (3505, 936)


def test_legacy_pucvmet_with_violations_ecc_and_pci() -> None:
    samples = parse_dmon(unquote_markdown(read("dmon_s_pucvmet_4gpu_legacy_temp_pviol_quoted.txt")))
    assert [s.gpu for s in samples] == [0, 1, 2, 3]
    gpu0 = samples[0]
    assert gpu0.gpu_temp_c == 83
    assert gpu0.fb_used_mib == 11651
    assert gpu0.extra["sbecc"] is None and gpu0.extra["dbecc"] is None
    assert (gpu0.extra["pviol"], gpu0.extra["tviol"], gpu0.extra["bar1"]) == (0, 0, 2)
    assert (gpu0.extra["rxpci"], gpu0.extra["txpci"]) == (41, 8)
    assert [s.fb_used_mib for s in samples] == [11651, 11653, 11653, 11660]


def test_markdown_quoted_capture_is_foreign_text() -> None:
    # Left quoted, no line starts with '#' or fits a header: nothing is read, nothing raises.
    assert parse_dmon(read("dmon_s_pucvmet_4gpu_legacy_temp_pviol_quoted.txt")) == []


def test_date_time_columns_with_glued_hash() -> None:
    samples = parse_dmon(read("dmon_o_DT_s_pucet_sbecc_dbecc_dash.txt"))
    assert [s.printed_time for s in samples] == [
        "20210102 19:12:31",
        "20210102 19:12:33",
        "20210102 19:12:35",
    ]
    first = samples[0]
    assert (first.gpu, first.power_w, first.sm_clock_mhz, first.mem_temp_c) == (0, 37, 582, None)
    assert first.extra["txpci"] == 1
    assert first.extra["sbecc"] is None


def test_time_date_memory_columns_with_blank_line() -> None:
    samples = parse_dmon(read("dmon_o_TD_s_mutc_jpg_ofa_rxpci_blankline.txt"))
    assert len(samples) == 5
    assert [s.fb_used_mib for s in samples] == [239, 74, 7, 478, 67]
    assert samples[1].printed_time == "20240104 13:54:36"
    assert samples[1].extra["rxpci"] == 217 and samples[1].extra["txpci"] == 677
    # -s mutc has no power group.
    assert samples[0].power_w is None and samples[0].gpu_temp_c is None


def test_memory_only_eight_gpus_two_cycles_without_final_newline() -> None:
    samples = parse_dmon(read("dmon_s_m_8gpu_fb_bar1_ccpm.txt"))
    assert [s.gpu for s in samples] == list(range(8)) * 2
    assert all(s.fb_used_mib == 4 and s.extra == {"bar1": 1, "ccpm": 0} for s in samples)
    assert all(s.sm_pct is None for s in samples)


def test_gpm_metrics_unknown_on_first_sample() -> None:
    samples = parse_dmon(read("dmon_gpm_metrics_8gpu_h800.txt"))
    assert [s.gpu for s in samples] == list(range(8))
    gpm = ("gract", "smutil", "smocc", "intutil", "mmaact", "dram", "fp64", "fp32", "fp16")
    links = ("pcitx", "pcirx", "nvlrx", "nvltx")
    assert all(samples[0].extra[name] is None for name in gpm + links)
    assert all(samples[1].extra[name] == 0 for name in gpm + links)
    assert (samples[0].mem_temp_c, samples[3].power_w, samples[3].mem_temp_c) == (28, 57, 27)


def test_foreign_line_before_header_is_ignored() -> None:
    samples = parse_dmon(read("dmon_s_pucm_rtxpro6000_server_load_with_foreign_line.txt"))
    assert len(samples) == 10
    assert samples[0].power_w == 158 and samples[1].power_w == 406
    assert all(s.extra["bar1"] == s.fb_used_mib == 3783 for s in samples)


@pytest.mark.parametrize("path", sorted(DMON.glob("*.txt")), ids=lambda path: path.name)
def test_every_capture_yields_rows(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    if "quoted" in path.name:
        text = unquote_markdown(text)
    samples = parse_dmon(text)
    data_rows = [line for line in text.splitlines() if line.split() and line.split()[0].isdigit()]
    assert len(samples) == len(data_rows) > 0
    assert all(any(v is not None for v in (s.sm_pct, s.fb_used_mib, s.power_w)) for s in samples)


def test_streaming_feed_matches_whole_text_parse() -> None:
    text = read("dmon_s_pucm_blackwell_4gpu_driver595.txt")
    parser = DmonParser()
    fed = [parser.feed(line) for line in text.splitlines(keepends=True)]
    assert fed[:2] == [None, None]
    assert [s for s in fed if s is not None] == parse_dmon(text)
    assert parser.columns is not None and parser.columns[:3] == ("gpu", "pwr", "gtemp")


def test_new_header_mid_stream_replaces_layout() -> None:
    memory_only = read("dmon_s_m_8gpu_fb_bar1_ccpm.txt")
    full = read("dmon_s_pucm_blackwell_4gpu_driver595.txt")
    samples = parse_dmon(memory_only + "\n" + full)
    assert len(samples) == 16 + 4
    assert samples[15].power_w is None and samples[16].power_w == 294


def test_row_of_a_different_layout_is_ignored() -> None:
    parser = DmonParser()
    header, units, row = read("dmon_s_m_8gpu_fb_bar1_ccpm.txt").splitlines()[:3]
    parser.feed(header)
    parser.feed(units)
    wide_row = read("dmon_s_pucm_blackwell_4gpu_driver595.txt").splitlines()[2]
    assert parser.feed(wide_row) is None
    assert parser.feed(row) == GpuSample(gpu=0, fb_used_mib=4, extra={"bar1": 1, "ccpm": 0})


def test_pmon_output_is_not_read_as_gpu_rows() -> None:
    for path in sorted((FIXTURES / "pmon").glob("*.txt")):
        assert parse_dmon(path.read_text(encoding="utf-8")) == []
    # ... also right after a dmon table: the pmon header ends it.
    dmon_then_pmon = (
        read("dmon_s_m_8gpu_fb_bar1_ccpm.txt")
        + "\n"
        + (FIXTURES / "pmon" / "pmon_s_um_blackwell_4gpu_driver595.txt").read_text(encoding="utf-8")
    )
    assert len(parse_dmon(dmon_then_pmon)) == 16


def test_comment_mentioning_gpu_keeps_header() -> None:
    lines = read("dmon_default_gtemp_mtemp_ramp_up.txt").splitlines()
    text = "\n".join([*lines[:3], "# check gpu usage again", *lines[3:]])
    assert len(parse_dmon(text)) == 9


def test_touching_columns_are_cut_at_header_edges() -> None:
    # A 6-digit framebuffer value fills its whole legacy 6-character slot and touches the tviol value;
    # the line is otherwise the first row of the 2016 capture.
    lines = unquote_markdown(read("dmon_s_pucvmet_4gpu_legacy_temp_pviol_quoted.txt")).splitlines()
    touching = lines[2].replace("     0 11651", "     0111651")
    assert len(touching) == len(lines[2])
    samples = parse_dmon("\n".join([lines[0], lines[1], touching]))
    assert len(samples) == 1
    assert samples[0].fb_used_mib == 111651
    assert samples[0].extra["tviol"] == 0 and samples[0].extra["bar1"] == 2


def test_shifted_row_is_dropped_not_misread() -> None:
    lines = unquote_markdown(read("dmon_s_pucvmet_4gpu_legacy_temp_pviol_quoted.txt")).splitlines()
    # A 7-digit value overflows its slot, touches its neighbour and shifts the rest of the row right.
    shifted = lines[2].replace("     0 11651", "     01111651")
    assert parse_dmon("\n".join([lines[0], lines[1], shifted])) == []


def test_date_columns_touching_are_cut_using_units_line() -> None:
    lines = read("dmon_o_DT_s_pucet_sbecc_dbecc_dash.txt").splitlines()
    # A 6-digit PCIe replay count fills its 6-character slot and touches the dbecc '-' before it.
    touching = lines[3].replace("     -     -     0", "     -     -100000")
    assert len(touching) == len(lines[3])
    samples = parse_dmon("\n".join([lines[0], lines[1], touching]))
    assert [(s.printed_time, s.sm_clock_mhz, s.extra["dbecc"], s.extra["pci"]) for s in samples] == [
        ("20210102 19:12:33", 1582, None, 100000)
    ]
    # Without the units line the date column's edge is unknown (`#Date` is narrower than `20210102`).
    assert parse_dmon("\n".join([lines[0], touching])) == []


def test_bus_id_in_gpu_column() -> None:
    lines = read("dmon_s_pucm_blackwell_4gpu_driver595.txt").splitlines()
    rows = [
        lines[2].replace("    0 ", "00000000:C1:00.0 ", 1),
        lines[3].replace("    1 ", "0000:01:00.0 ", 1),
    ]
    text = "\n".join([lines[0], lines[1], *rows])
    assert [s.gpu for s in parse_dmon(text)] == [0, 1]
    parser = DmonParser(gpu_index_by_bus_id={"00000000:01:00.0": 0, "00000000:c1:00.0": 3})
    fed = [parser.feed(line) for line in text.splitlines()]
    assert [(s.gpu, s.power_w) for s in fed if s is not None] == [(3, 294), (0, 292)]
    unknown_bus = DmonParser(gpu_index_by_bus_id={"00000000:41:00.0": 1})
    assert [unknown_bus.feed(line) for line in text.splitlines()] == [None] * 4


def test_normalise_pci_bus_id() -> None:
    assert normalise_pci_bus_id("0000:c1:00.0") == "00000000:C1:00.0"
    assert normalise_pci_bus_id("01:00.0") == "00000000:01:00.0"
    assert normalise_pci_bus_id("00000000:41:00.0") == "00000000:41:00.0"
    assert normalise_pci_bus_id("GPU-e16d248c") is None
    assert normalise_pci_bus_id("0") is None


def test_non_numbers_and_non_finite_values_make_a_line_foreign() -> None:
    lines = read("dmon_default_gtemp_mtemp_ramp_up.txt").splitlines()
    parser = DmonParser()
    parser.feed(lines[0])
    for bad in ("nan", "inf", "1_000", "ERR!"):
        assert parser.feed(lines[2].replace("   70 ", f"{bad:>5} ", 1)) is None
    assert parser.feed(lines[2].replace("  -  ", " N/A ", 1)) is not None


def test_dmon_argv_prints_date_time_and_all_core_groups() -> None:
    assert DMON_ARGV[:2] == ("nvidia-smi", "dmon")
    assert DMON_ARGV[DMON_ARGV.index("-s") + 1] == "pucm"
    assert DMON_ARGV[DMON_ARGV.index("-o") + 1] == "DT"


_FRAGMENTS = st.sampled_from(
    [
        "#",
        "# gpu",
        "#Date",
        "Time",
        "gpu",
        "Idx",
        "pwr",
        "gtemp",
        "temp",
        "sm",
        "fb",
        "pid",
        "-",
        "0",
        "00000000:01:00.0",
        "20210102",
        "19:12:31",
        "12345",
        "1.5",
        "nan",
        "N/A",
        "\t",
        " ",
        "  ",
        "\r",
        "\x00",
    ]
)
_LINES = st.lists(_FRAGMENTS, max_size=12).map(" ".join)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_parse_dmon_never_raises_on_any_text(text: str) -> None:
    assert all(isinstance(s, GpuSample) for s in parse_dmon(text))


@settings(max_examples=300, deadline=None)
@given(st.lists(_LINES, max_size=12))
def test_feed_never_raises_on_header_like_lines(lines: list[str]) -> None:
    parser = DmonParser()
    for line in lines:
        sample = parser.feed(line)
        assert sample is None or isinstance(sample.gpu, int)


# ------------------------------------------------------------------------ fast row path, inventory, repeats


_UUID0 = "GPU-e16d248c-c1a9-3302-01d6-82c18e02c9ce"
_UUID1 = "GPU-45007176-8a28-3db0-cea5-27903b16107b"


def _blackwell_inventory() -> dict[int, GpuSample]:
    """What --query-gpu said about GPUs 0 and 1 of the Blackwell host (tests/fixtures/query_gpu capture)."""
    name = "NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition"
    return {
        0: GpuSample(gpu=0, fb_total_mib=97887, power_limit_w=300.0, uuid=_UUID0, name=name),
        1: GpuSample(gpu=1, fb_total_mib=97887, power_limit_w=300.0, uuid=_UUID1, name=name),
    }


def test_inventory_fills_what_dmon_does_not_print() -> None:
    lines = read("dmon_s_pucm_blackwell_4gpu_driver595.txt").splitlines()
    parser = DmonParser(inventory=_blackwell_inventory())
    samples = [sample for line in lines if (sample := parser.feed(line)) is not None]
    gpu0, gpu1, gpu2 = samples[0], samples[1], samples[2]
    assert (gpu0.fb_total_mib, gpu0.power_limit_w, gpu0.uuid) == (97887, 300.0, _UUID0)
    assert gpu1.uuid == _UUID1 and gpu1.name is not None and gpu1.name.endswith("Edition")
    # dmon's own numbers are untouched; a GPU the inventory does not know has none of its fields.
    assert (gpu0.power_w, gpu0.fb_used_mib, gpu0.sm_pct) == (294, 90538, 98)
    assert (gpu2.uuid, gpu2.fb_total_mib, gpu2.name, gpu2.power_limit_w) == (None, None, None, None)
    # A new inventory (a power limit was changed) applies to the rows after it.
    parser.set_inventory({0: GpuSample(gpu=0, power_limit_w=250.0)})
    again = parser.feed(lines[2])
    assert again is not None and (again.power_limit_w, again.uuid, again.power_w) == (250.0, None, 294)


def test_every_field_of_a_row_lands_in_its_own_place() -> None:
    # The parser builds samples positionally (for speed): each field is checked here by name.
    line = read("dmon_s_pucm_blackwell_4gpu_driver595.txt").splitlines()
    parser = DmonParser(inventory=_blackwell_inventory())
    sample = next(sample for text in line if (sample := parser.feed(text)) is not None)
    assert dataclasses.asdict(sample) == {
        "gpu": 0,
        "sm_pct": 98.0,
        "mem_util_pct": 57.0,
        "fb_used_mib": 90538.0,
        "fb_total_mib": 97887,
        "power_w": 294.0,
        "power_limit_w": 300.0,
        "gpu_temp_c": 81.0,
        "mem_temp_c": None,
        "sm_clock_mhz": 1897.0,
        "mem_clock_mhz": 13365.0,
        "uuid": _UUID0,
        "name": "NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition",
        "printed_time": None,
        "extra": {"enc": 0.0, "dec": 0.0, "jpg": 0.0, "ofa": 0.0, "bar1": 4.0, "ccpm": 0.0},
    }
    # The extras read as a plain mapping: keys in column order, values, membership, equality.
    assert list(sample.extra) == ["enc", "dec", "jpg", "ofa", "bar1", "ccpm"]
    assert (sample.extra["bar1"], "ccpm" in sample.extra, "fb" in sample.extra, len(sample.extra)) == (
        4.0,
        True,
        False,
        6,
    )
    assert sample.extra == {"enc": 0.0, "dec": 0.0, "jpg": 0.0, "ofa": 0.0, "bar1": 4.0, "ccpm": 0.0}


def test_headers_printed_again_are_read_the_same_way() -> None:
    # The 4-GPU capture printed three times in a row, headers and all, as the fleet's stand-in replays it.
    text = read("dmon_s_pucm_blackwell_4gpu_driver595.txt")
    once = parse_dmon(text)
    assert parse_dmon("\n".join([text] * 3)) == once * 3
    # A units line widens the header in force; repeated, it still cuts touching columns at the same edges.
    lines = read("dmon_o_DT_s_pucet_sbecc_dbecc_dash.txt").splitlines()
    touching = lines[3].replace("     -     -     0", "     -     -100000")
    cycle = [lines[0], lines[1], touching]
    samples = parse_dmon("\n".join(cycle * 3))
    assert [(s.printed_time, s.extra["pci"]) for s in samples] == [("20210102 19:12:33", 100000)] * 3


def test_a_new_layout_after_repeated_headers_takes_over() -> None:
    blackwell = read("dmon_s_pucm_blackwell_4gpu_driver595.txt")
    memory_only = read("dmon_s_m_8gpu_fb_bar1_ccpm.txt")
    samples = parse_dmon("\n".join([blackwell, blackwell, memory_only, blackwell]))
    assert [s.power_w for s in samples[8:24]] == [None] * 16
    assert [s.fb_used_mib for s in samples[8:24]] == [4] * 16
    assert samples[24].power_w == 294 and samples[24].extra == samples[0].extra


@pytest.mark.parametrize("value", ["1e999", "-1e999", "9" * 400, "1_0", "nan", "Infinity"])
def test_values_that_are_not_finite_dmon_numbers_make_a_row_foreign(value: str) -> None:
    lines = read("dmon_default_gtemp_mtemp_ramp_up.txt").splitlines()
    parser = DmonParser()
    parser.feed(lines[0])
    assert parser.feed(lines[2].replace("   70 ", f" {value} ", 1)) is None
    # The parser keeps reading the rows after it.
    assert parser.feed(lines[3]) is not None


_ROW_VALUES = st.lists(
    st.one_of(st.integers(min_value=0, max_value=10**9).map(str), st.just("-")), min_size=8, max_size=8
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_ROW_VALUES, min_size=1, max_size=6), st.sampled_from(["", " N/A"]))
def test_rows_read_back_the_numbers_they_hold(rows: list[list[str]], extra: str) -> None:
    header = "# gpu    pwr  gtemp  mtemp     sm    mem    enc    dec   mclk" + ("    bar1" if extra else "")
    parser = DmonParser()
    parser.feed(header)
    for index, cells in enumerate(rows):
        sample = parser.feed(f"{index:>5} " + " ".join(f"{cell:>6}" for cell in cells) + extra)
        assert sample is not None
        expected = [None if cell == "-" else float(cell) for cell in cells]
        pwr, gtemp, mtemp, sm, mem, enc, dec, mclk = expected
        assert sample.gpu == index
        assert (sample.power_w, sample.gpu_temp_c, sample.mem_temp_c) == (pwr, gtemp, mtemp)
        assert (sample.sm_pct, sample.mem_util_pct, sample.mem_clock_mhz) == (sm, mem, mclk)
        assert (sample.extra["enc"], sample.extra["dec"]) == (enc, dec)
        assert sample.fb_used_mib is None and sample.sm_clock_mhz is None
        if extra:
            assert sample.extra["bar1"] is None


def test_a_row_sample_is_the_frozen_sample_its_fields_make() -> None:
    # dmon builds samples by writing their slots (cheaper than the frozen dataclass's __init__): the result
    # must be indistinguishable from GpuSample(...) and stay frozen.
    for sample in parse_dmon(read("dmon_s_pucm_blackwell_4gpu_driver595.txt")):
        values = tuple(getattr(sample, field.name) for field in dataclasses.fields(GpuSample))
        assert sample == GpuSample(*values)
        assert repr(sample) == repr(GpuSample(*values))
        with pytest.raises(dataclasses.FrozenInstanceError):
            sample.sm_pct = 1.0  # type: ignore[misc]
