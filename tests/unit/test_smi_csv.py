"""Tests for the `--query-gpu` / `--query-compute-apps` CSV parser on every real query capture."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainmon_tui.model import ComputeApp, GpuSample
from trainmon_tui.parsers.smi_csv import (
    APP_FIELD_ALIASES,
    GPU_FIELD_ALIASES,
    QUERY_APPS_ARGV,
    QUERY_APPS_FIELDS,
    QUERY_GPU_ARGV,
    QUERY_GPU_FIELDS,
    parse_compute_apps,
    parse_number,
    parse_query_gpu,
    read_query_table,
)

QUERY = Path(__file__).parent.parent / "fixtures" / "query_gpu"

# The field lists these header-less captures were produced with (from their nvidia-smi command lines).
FIELDS_23 = [
    "index",
    "uuid",
    "name",
    "pci.bus_id",
    "driver_version",
    "utilization.gpu",
    "utilization.memory",
    "memory.total",
    "memory.used",
    "memory.free",
    "temperature.gpu",
    "temperature.memory",
    "power.draw",
    "power.limit",
    "clocks.gr",
    "clocks.mem",
    "clocks.max.gr",
    "clocks.max.mem",
    "fan.speed",
    "pstate",
    "pcie.link.gen.current",
    "pcie.link.width.current",
    "encoder.stats.sessionCount",
]
FIELDS_THROTTLE = [
    "index",
    "power.draw.average",
    "power.draw.instant",
    "clocks_throttle_reasons.active",
    "memory.reserved",
    "ecc.mode.current",
    "mig.mode.current",
]
FIELDS_APPS_UUID = ["pid", "process_name", "gpu_uuid", "used_memory"]


def read(name: str) -> str:
    return (QUERY / name).read_text(encoding="utf-8")


def test_header_with_units_in_values_two_gpus() -> None:
    samples = parse_query_gpu(read("query_gpu_csv_header_units_two_different_gpus.txt"))
    assert [(s.gpu, s.name) for s in samples] == [(0, "GeForce GTX 1080 Ti"), (1, "GeForce GTX 1060 6GB")]
    first = samples[0]
    assert first.fb_total_mib == 11175 and first.fb_used_mib == 2856
    assert first.sm_pct == 36 and first.gpu_temp_c == 60
    assert first.power_w == pytest.approx(106.56)
    assert first.mem_clock_mhz == 5508
    # clocks.gr was echoed as clocks.current.graphics; it is kept under the name one asks for.
    assert dict(first.extra) == {"fan.speed": 29, "clocks.gr": 1936}
    assert first.mem_util_pct is None and first.power_limit_w is None
    assert samples[1].power_w == pytest.approx(5.68) and samples[1].fb_used_mib == 4


def test_header_units_and_echoed_names_are_read() -> None:
    table = read_query_table(read("query_gpu_csv_header_units_two_different_gpus.txt"))
    assert table.fields[-2:] == ("clocks.gr", "clocks.mem")
    assert table.units == (None, "%", "MiB", "MiB", "%", None, "W", "MHz", "MHz")


def test_piped_through_column_t() -> None:
    samples = parse_query_gpu(read("query_gpu_csv_piped_through_column.txt"))
    assert [(s.gpu, s.name, s.gpu_temp_c, s.mem_clock_mhz) for s in samples] == [
        (0, "GeForce GTX 1080", 38, 4873),
        (1, "GeForce GTX 1080", 35, 4873),
    ]
    assert [s.power_w for s in samples] == pytest.approx([131.17, 131.13])
    assert samples[1].extra == {"fan.speed": 70, "clocks.gr": 1721}


def test_lms_loop_with_timestamps_and_text_pstate() -> None:
    samples = parse_query_gpu(read("query_gpu_lms_timestamp_pstate_units.txt"))
    assert [s.printed_time for s in samples] == [
        "2024/01/16 14:44:16.977",
        "2024/01/16 14:44:16.981",
        "2024/01/16 14:44:16.986",
        "2024/01/16 14:44:16.990",
        "2024/01/16 14:44:17.095",
    ]
    assert [s.gpu_temp_c for s in samples] == [25, 24, 23, 26, 25]
    assert [s.fb_used_mib for s in samples] == [21, 7, 7, 7, 21]
    assert all(s.fb_total_mib == 23028 and s.sm_pct == 0 and s.mem_util_pct == 0 for s in samples)
    # pstate is text ("P8"): not a number, so it is left out rather than stored as unknown.
    assert samples[0].extra == {"memory.free": 22494}


def test_noheader_nounits_23_fields() -> None:
    samples = parse_query_gpu(read("query_gpu_noheader_nounits_23fields_blackwell.txt"), FIELDS_23)
    assert [s.gpu for s in samples] == [0, 1, 2, 3]
    gpu2 = samples[2]
    assert gpu2.uuid == "GPU-d9a18a51-6b47-71b3-44aa-dfd4448a0e88"
    assert gpu2.name == "NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition"
    assert (gpu2.sm_pct, gpu2.mem_util_pct) == (100, 64)
    assert (gpu2.fb_total_mib, gpu2.fb_used_mib) == (97887, 48243)
    assert gpu2.gpu_temp_c == 79
    assert gpu2.mem_temp_c is None  # printed N/A
    assert gpu2.power_w == pytest.approx(299.95) and gpu2.power_limit_w == 300
    assert gpu2.mem_clock_mhz == 13365
    assert gpu2.extra["memory.free"] == 49007 and gpu2.extra["clocks.max.gr"] == 3090
    assert gpu2.extra["pcie.link.gen.current"] == 5 and gpu2.extra["encoder.stats.sessionCount"] == 0
    # Text fields (bus id, driver version, pstate) are not squeezed into numbers.
    assert not {"pci.bus_id", "driver_version", "pstate"} & set(gpu2.extra)
    assert [s.power_w for s in samples] == pytest.approx([299.35, 287.14, 299.95, 300.00])


def test_noheader_throttle_hex_and_bracketed_na() -> None:
    samples = parse_query_gpu(
        read("query_gpu_noheader_nounits_throttle_mig_na_brackets.txt"), FIELDS_THROTTLE
    )
    assert [s.gpu for s in samples] == [0, 1, 2, 3]
    first = samples[0]
    assert first.extra["power.draw.average"] == pytest.approx(297.37)
    assert first.extra["power.draw.instant"] == pytest.approx(307.72)
    assert first.extra["clocks_throttle_reasons.active"] == 4
    assert first.extra["memory.reserved"] == 638
    assert first.extra["mig.mode.current"] is None  # printed [N/A]
    assert "ecc.mode.current" not in first.extra  # printed Disabled (text)
    assert first.power_w is None


def test_compute_apps_noheader_by_uuid() -> None:
    apps = parse_compute_apps(read("query_compute_apps_noheader_nounits_uuid.txt"), FIELDS_APPS_UUID)
    assert apps[0] == ComputeApp(
        pid=2094147,
        gpu_uuid="GPU-e16d248c-c1a9-3302-01d6-82c18e02c9ce",
        process_name="sglang::scheduler_TP0_EP0",
        used_memory_mib=90480,
    )
    assert [app.pid for app in apps] == [2094147, 2094383, 377306, 377813, 377306, 377814]
    assert [app.used_memory_mib for app in apps] == [90480, 90478, 550, 47594, 550, 47560]
    assert apps[2].process_name == "/root/sglang/.venv/bin/python3"
    assert apps[2].gpu_uuid != apps[4].gpu_uuid  # same pid on two GPUs


def test_compute_apps_without_pid_yields_no_apps_but_table_keeps_cells() -> None:
    text = read("query_compute_apps_csv_header_gpu_uuid_process_name.txt")
    assert parse_compute_apps(text) == []
    table = read_query_table(text, aliases=APP_FIELD_ALIASES)
    assert table.fields == ("gpu_uuid", "process_name")
    assert table.rows == (
        ("GPU-d0180485-9584-433c-6782-c335d5df2cb3", "vgpu"),
        ("GPU-777ead31-954e-837f-590f-6c4974d8e571", "vgpu"),
        ("GPU-777ead31-954e-837f-590f-6c4974d8e571", "vgpu"),
    )


def test_header_present_even_when_fields_are_given() -> None:
    text = read("query_gpu_csv_piped_through_column.txt")
    fields = ["index", "name", "power.draw", "temperature.gpu", "fan.speed", "clocks.gr", "clocks.mem"]
    assert parse_query_gpu(text, fields) == parse_query_gpu(text)


def test_word_like_first_row_is_data_when_fields_are_given() -> None:
    samples = parse_query_gpu("0, P8\n1, P0\n", ["index", "pstate"])
    assert [s.gpu for s in samples] == [0, 1]


def test_header_less_text_without_fields_is_empty() -> None:
    assert parse_query_gpu(read("query_gpu_noheader_nounits_23fields_blackwell.txt")) == []
    assert read_query_table(read("query_compute_apps_noheader_nounits_uuid.txt")).fields == ()


def test_comma_inside_process_name_is_kept() -> None:
    apps = parse_compute_apps("GPU-abc, 123, python -c a, b, 512\n", QUERY_APPS_FIELDS)
    assert apps == [
        ComputeApp(pid=123, gpu_uuid="GPU-abc", process_name="python -c a, b", used_memory_mib=512)
    ]


def test_collector_output_round_trip() -> None:
    # A line in exactly the collector's format, values taken from the 23-field Blackwell capture (GPU 0).
    line = (
        "0, GPU-e16d248c-c1a9-3302-01d6-82c18e02c9ce, "
        "NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition, "
        "99, 55, 90538, 97887, 299.35, 300.00, 81, N/A, 1927, 13365"
    )
    (sample,) = parse_query_gpu(line, QUERY_GPU_FIELDS)
    assert sample == GpuSample(
        gpu=0,
        sm_pct=99,
        mem_util_pct=55,
        fb_used_mib=90538,
        fb_total_mib=97887,
        power_w=299.35,
        power_limit_w=300,
        gpu_temp_c=81,
        mem_temp_c=None,
        sm_clock_mhz=1927,
        mem_clock_mhz=13365,
        uuid="GPU-e16d248c-c1a9-3302-01d6-82c18e02c9ce",
        name="NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition",
    )


def test_argv_constants_name_the_fields() -> None:
    expected = ("nvidia-smi", "--query-gpu=" + ",".join(QUERY_GPU_FIELDS), "--format=csv,noheader,nounits")
    assert expected == QUERY_GPU_ARGV
    assert QUERY_APPS_ARGV[1] == "--query-compute-apps=gpu_uuid,pid,process_name,used_memory"
    assert QUERY_GPU_FIELDS[0] == "index"


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("106.56 W", 106.56),
        ("29 %", 29.0),
        ("23028 MiB", 23028.0),
        ("0x0000000000000004", 4.0),
        ("Disabled", None),
        ("P8", None),
        ("nan", None),
        ("1_000", None),
        (None, None),
    ],
)
def test_parse_number(cell: str | None, expected: float | None) -> None:
    assert parse_number(cell) == expected


@pytest.mark.parametrize("path", sorted(QUERY.glob("*.txt")), ids=lambda path: path.name)
def test_every_capture_reads_every_row(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    fields = {
        "query_gpu_noheader_nounits_23fields_blackwell.txt": FIELDS_23,
        "query_gpu_noheader_nounits_throttle_mig_na_brackets.txt": FIELDS_THROTTLE,
        "query_compute_apps_noheader_nounits_uuid.txt": FIELDS_APPS_UUID,
    }.get(path.name)
    aliases = APP_FIELD_ALIASES if "compute_apps" in path.name else GPU_FIELD_ALIASES
    table = read_query_table(text, fields, aliases)
    has_header = fields is None
    assert len(table.rows) == len(text.splitlines()) - has_header
    assert all(len(row) == len(table.fields) for row in table.rows)


_CELLS = st.sampled_from(
    [
        "index",
        "name",
        "memory.used [MiB]",
        "N/A",
        "[N/A]",
        "[Not Supported]",
        "0",
        "12 MiB",
        "0x1f",
        "P8",
        "",
        " ",
    ]
)
_ROWS = st.lists(_CELLS, max_size=8).map(", ".join) | st.lists(_CELLS, max_size=8).map("   ".join)


@settings(max_examples=200, deadline=None)
@given(st.text(), st.none() | st.lists(st.sampled_from(list(QUERY_GPU_FIELDS)), max_size=6))
def test_parsers_never_raise_on_any_text(text: str, fields: list[str] | None) -> None:
    assert all(isinstance(s, GpuSample) for s in parse_query_gpu(text, fields))
    assert all(isinstance(a, ComputeApp) for a in parse_compute_apps(text, fields))


@settings(max_examples=300, deadline=None)
@given(st.lists(_ROWS, max_size=8))
def test_parsers_never_raise_on_csv_like_text(rows: list[str]) -> None:
    text = "\n".join(rows)
    parse_query_gpu(text)
    parse_query_gpu(text, QUERY_GPU_FIELDS)
    parse_compute_apps(text)
    parse_compute_apps(text, QUERY_APPS_FIELDS)
