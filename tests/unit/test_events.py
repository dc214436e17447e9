"""Tests for the log event detector on every real error sample and every real training log of the corpus."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainmon_tui.model import EventKind, LogEvent
from trainmon_tui.parsers.trainlog.events import MAX_TEXT, REPEAT_WINDOW_LINES, EventDetector

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "errors"
# The training logs live once, in tests/fixtures/logs/ (its errors/ entry links back to this folder).
LOG_FIXTURES = FIXTURES.parent / "logs"

OOM = EventKind.OOM
NCCL_TIMEOUT = EventKind.NCCL_TIMEOUT
NCCL_ERROR = EventKind.NCCL_ERROR
NAN = EventKind.NAN
TRACEBACK = EventKind.TRACEBACK
CHILD_FAILED = EventKind.CHILD_FAILED
KILLED = EventKind.KILLED
XID = EventKind.XID
SMI_FAILED = EventKind.SMI_FAILED

# The rank prefixes the engine removes before the detector sees a line: torchrun's "[rank3]:" and "[host:3]".
_RANK_PREFIX = re.compile(r"\[rank(\d+)\]:|\[[A-Za-z][\w.-]*:(\d+)\]")


def _detect(lines: list[str]) -> list[LogEvent]:
    """Run a detector as the engine does: \\r pieces of a physical line share its number; no rank prefix."""
    detector = EventDetector()
    events: list[LogEvent] = []
    for number, physical in enumerate(lines, start=1):
        for piece in physical.split("\r"):
            rank: int | None = None
            text = piece
            prefix = _RANK_PREFIX.match(piece)
            if prefix is not None:
                rank = int(prefix[1] or prefix[2])
                text = piece[prefix.end() :]
            text = text.rstrip()
            if text:
                events.extend(detector.feed(text, number, rank))
    events.extend(detector.finish())
    return events


def _detect_file(path: Path) -> list[LogEvent]:
    # newline="" keeps the \r of progress-bar redraws inside their line, as the engine reads files.
    with path.open(encoding="utf-8", newline="") as handle:
        lines = handle.read().split("\n")
    if lines[-1] == "":
        lines.pop()
    return _detect(lines)


def _summary(events: list[LogEvent]) -> list[tuple[int, int | None, EventKind]]:
    return [(event.line, event.rank, event.kind) for event in events]


# Every file of corpus/errors: the events it must give as (line, rank, kind), in order.
EXPECTED_ERRORS: dict[str, list[tuple[int, int | None, EventKind]]] = {
    # The launcher's traceback is cut off in the excerpt: reported at its last frame when input ends.
    "accelerate_stderr_prefixed_elastic_failure.txt": [(4, None, CHILD_FAILED), (14, None, TRACEBACK)],
    # ChildFailedError ends the (headerless) traceback; the Root Cause block says exitcode -9.
    "childfailederror_accelerate_deepspeed_sigkill_root_cause.txt": [
        (10, None, CHILD_FAILED),
        (22, None, KILLED),
    ],
    # exitcode -9 is both a failed child and a SIGKILL; the ChildFailedError traceback repeats the first.
    "childfailederror_glog_E_prefix_py312_exitcode9.txt": [(1, None, CHILD_FAILED), (1, None, KILLED)],
    "childfailederror_tqdm_fused_exitcode9_loading_shards.txt": [(1, None, CHILD_FAILED), (1, None, KILLED)],
    # This excerpt holds prose and a code block only (no OOM): nothing to report.
    "cuda_oom_backward_traceback_b200.txt": [],
    # The OOM ends a traceback: one OOM event at the exception line, no separate traceback event.
    "cuda_oom_forward_traceback_b200_py312.txt": [(14, None, OOM)],
    "cuda_oom_pt12_cached_wording.txt": [(1, None, OOM)],
    "cuda_oom_pt15_reserved_malloc_windows.txt": [(1, None, OOM)],
    "cuda_oom_pt1x_max_split_size_hint.txt": [(1, None, OOM)],
    "cuda_oom_pt21_outofmemoryerror_capacty_typo.txt": [(1, None, OOM)],
    "cuda_oom_pt22_expandable_segments_hint.txt": [(1, None, OOM)],
    "dataloader_worker_killed_by_signal.txt": [(1, None, KILLED)],
    # Host memory, killed by the kernel: a kill, not a CUDA OOM.
    "dmesg_memcg_oom_killed_process_onmt.txt": [(1, None, KILLED)],
    "dmesg_nvrm_gpu_fallen_off_bus_multiline.txt": [(3, None, XID)],
    "dmesg_nvrm_no_adapter_probed_nouveau_conflict.txt": [(1, None, XID)],
    "dmesg_oom_killer_python3_wrapped.txt": [(2, None, KILLED)],
    "nccl_processgroupnccl_async_takedown_old.txt": [(1, None, NCCL_ERROR)],
    "nccl_unhandled_system_error_barrier.txt": [(2, None, NCCL_ERROR)],
    # The "-> 6" INFO lines that follow only propagate the WARN.
    "nccl_warn_ib_completion_error12.txt": [(1, None, NCCL_ERROR)],
    "nccl_watchdog_timeout_desync_report_fr.txt": [(1, 0, NCCL_TIMEOUT)],
    # Rank 0 prints its timeout four times (once fused onto a progress bar): one event; rank 7 its own.
    "nccl_watchdog_timeout_fused_with_nemo_lightning_bar.txt": [(2, 0, NCCL_TIMEOUT), (6, 7, NCCL_TIMEOUT)],
    # The rank comes from "[Rank N]" in the text when the line had no rank prefix.
    "nccl_watchdog_timeout_old_format_8xV100.txt": [
        (1, 1, NCCL_TIMEOUT),
        (2, 3, NCCL_TIMEOUT),
        (3, 2, NCCL_TIMEOUT),
        (4, 6, NCCL_TIMEOUT),
        (5, 7, NCCL_TIMEOUT),
    ],
    # The "Exception ... detected by watchdog" line after each timeout is the same failure.
    "nccl_watchdog_timeout_rankN_prefix_glog_pt25.txt": [
        (1, 1, NCCL_TIMEOUT),
        (3, 0, NCCL_TIMEOUT),
        (5, 2, NCCL_TIMEOUT),
    ],
    # bash's "8156 Killed", slurm's oom-kill event and the final bare "Killed" are one failure for this log.
    "slurm_oom_kill_killed_after_epoch_lines.txt": [(1, None, KILLED)],
    "smi_failed_couldnt_communicate_single_line.txt": [(1, None, SMI_FAILED)],
    "smi_failed_couldnt_communicate_two_lines_curly_quote.txt": [(1, None, SMI_FAILED)],
    "smi_no_devices_were_found_in_container.txt": [(2, None, SMI_FAILED)],
    "smi_no_devices_were_found_with_nvrm_syslog.txt": [(2, None, SMI_FAILED), (5, None, XID)],
    "smi_query_invalid_field.txt": [(1, None, SMI_FAILED)],
    "smi_unable_to_determine_device_handle.txt": [(2, None, SMI_FAILED)],
    # The SIGTERMs the launcher sends to the siblings are consequences, not events.
    "torchrun_sigterm_siblings_then_exitcode9.txt": [
        (6, None, CHILD_FAILED),
        (6, None, KILLED),
        (14, None, TRACEBACK),
    ],
}

# Training logs that really contain an event; every other log of the corpus must give none.
EXPECTED_LOGS: dict[str, list[tuple[int, int | None, EventKind]]] = {
    "hf_trainer/hf_trainer_raw_cr_tqdm_then_keyboardinterrupt.txt": [(30, None, TRACEBACK)],
    "misc/killed_after_tqdm_100pct.txt": [(4, None, KILLED)],
    "mmengine/mmcv_legacy_mmdet_iter_based_loss_nan.txt": [(1, None, NAN)],
    # NaN from iter 425 to the end (six lines): reported once.
    "nanogpt/nanogpt_full_log_startup_eval_ckpt_then_nan.txt": [(104, None, NAN)],
    "nanogpt/nanogpt_iter_loss_mfu_nan_after_ckpt_quoted.txt": [(23, None, NAN)],
    "torchrun/torchrun_tee3_role_host_rank_prefix_interleaved_traceback.txt": [
        (4, 0, TRACEBACK),
        (10, 1, TRACEBACK),
        (11, 2, TRACEBACK),
        (12, 3, TRACEBACK),
    ],
}


def test_every_error_sample_has_an_expectation() -> None:
    assert sorted(path.name for path in FIXTURES.glob("*.txt")) == sorted(EXPECTED_ERRORS)


@pytest.mark.parametrize("name", sorted(EXPECTED_ERRORS))
def test_error_samples_give_the_expected_events(name: str) -> None:
    assert _summary(_detect_file(FIXTURES / name)) == EXPECTED_ERRORS[name]


def test_corpus_logs_are_all_there() -> None:
    assert len(_training_logs()) == 51


def _training_logs() -> list[str]:
    return sorted(
        str(p.relative_to(LOG_FIXTURES)) for p in LOG_FIXTURES.glob("*/*.txt") if p.parent.name != "errors"
    )


@pytest.mark.parametrize("name", _training_logs())
def test_training_logs_give_no_false_events(name: str) -> None:
    assert _summary(_detect_file(LOG_FIXTURES / name)) == EXPECTED_LOGS.get(name, [])


def _events_of(name: str) -> list[LogEvent]:
    path = LOG_FIXTURES / name if "/" in name else FIXTURES / name
    return _detect_file(path)


def test_event_texts_carry_the_line_that_says_what_happened() -> None:
    (oom,) = _events_of("cuda_oom_forward_traceback_b200_py312.txt")
    assert oom.text.startswith("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 55.88 GiB.")
    (interrupt,) = _events_of("hf_trainer/hf_trainer_raw_cr_tqdm_then_keyboardinterrupt.txt")
    assert interrupt.text == "KeyboardInterrupt"
    tracebacks = _events_of("torchrun/torchrun_tee3_role_host_rank_prefix_interleaved_traceback.txt")
    assert {event.text for event in tracebacks} == {"AttributeError: 'list' object has no attribute 'sum'"}
    child, _, cut_off = _events_of("torchrun_sigterm_siblings_then_exitcode9.txt")
    assert "failed (exitcode: -9) local_rank: 3 (pid: 812917)" in child.text
    assert cut_off.text.startswith('File "/data/chenhao/anaconda3/envs/ColossalAI-Chat/lib/python3.10/')
    (nan,) = _events_of("nanogpt/nanogpt_full_log_startup_eval_ckpt_then_nan.txt")
    assert nan.text == "iter 425: loss nan, time 1440.31ms, mfu 0.01%"
    (xid,) = _events_of("dmesg_nvrm_gpu_fallen_off_bus_multiline.txt")
    assert xid.text == "NVRM: fallen off the bus and is not responding to commands."


def test_a_long_fused_line_is_cut_around_what_made_it_an_event() -> None:
    first, _ = _events_of("nccl_watchdog_timeout_fused_with_nemo_lightning_bar.txt")
    assert len(first.text) <= MAX_TEXT
    assert "[Rank 0] Watchdog caught collective operation timeout" in first.text
    (mmdet_nan,) = _events_of("mmengine/mmcv_legacy_mmdet_iter_based_loss_nan.txt")
    assert len(mmdet_nan.text) <= MAX_TEXT
    assert "loss_cls: nan" in mmdet_nan.text


# --- single lines: what is and what is not an event ---------------------------------------------------------


def _kinds(text: str, rank: int | None = None) -> list[EventKind]:
    detector = EventDetector()
    return [event.kind for event in detector.feed(text, 1, rank) + detector.finish()]


@pytest.mark.parametrize(
    "line",
    [
        # fp16 loss-scale overflow is routine, not NaN (corpus: deepspeed, fairseq).
        "[2024-07-17 19:44:06,945] [INFO] [loss_scaler.py:183:update_scale] [deepspeed] OVERFLOW! Rank 0 "
        "Skipping step. Attempted loss scale: 65536, reducing to 32768",
        "2020-04-05 18:47:19 | INFO | fairseq.trainer | NOTE: overflow detected, setting loss scale to: 64.0",
        # A NaN grad-norm or reward in a metric dict is the metric parser's business (corpus: HF, TRL).
        "{'loss': 0.0, 'grad_norm': nan, 'learning_rate': 9.773696745450087e-06, 'epoch': 0.53}",
        "{'loss': 0.0, 'grad_norm': nan, 'rewards/chosen': nan, 'logps/rejected': nan, 'epoch': 0.01}",
        "10/30 22:19:57 - mmengine - INFO - Epoch(train) [1][240/735]  lr: 1.9813e-04  "
        "loss: 2.5128  grad_norm: nan",
        # "nan" inside a word, and a running average that is nan.
        "step:3/20344 train_loss:9.4517 train_time:85333ms step_avg:nanms",
        "Averaged stats: lr: 0.001435  loss: 6.5993 (6.5925)  **grad_norm: 0.3922 (nan)**",
        # A NaN counter at zero, a loss scale, config names.
        "number of skipped iterations:   0 | number of nan iterations:   0 |",
        "loss_scale: nan",
        "detect_anomaly=False, nan_to_num=True, skip_nan_steps: 0, nanogpt/config/train_shakespeare_char.py",
        # NCCL chatter, launcher bookkeeping, ordinary warnings.
        "node-2:5776:5902 [0] NCCL INFO transport/net.cc:1134 -> 6",
        "NCCL INFO NET/Plugin : Plugin load returned 2 : libnccl-net.so: cannot open shared object file",
        "WARNING:torch.distributed.elastic.multiprocessing.api:Sending process 812914 closing signal SIGTERM",
        "Setting OMP_NUM_THREADS environment variable for each process to be 1 in default",
        "tokens per iteration will be: 512",
        "Number of parameters in transformer block in billions:  0.08",
        "Killing subprocess 12345",
        "pip install accelerate  # will fill the memory budget",
        "The NVIDIA driver on your system is too old? No: driver 535.86.05, CUDA 12.2",
    ],
)
def test_ordinary_lines_are_not_events(line: str) -> None:
    assert _kinds(line) == []


@pytest.mark.parametrize(
    ("line", "kinds"),
    [
        ("Loss is nan, stopping training", [NAN]),
        ("Warning: NaN or Inf found in input tensor.", [NAN]),
        ("RuntimeError: Function 'MulBackward0' returned nan values in its 0th output.", [NAN]),
        ("Rank 3: found NaN in local grad norm in backward pass before data-parallel communication", [NAN]),
        ("number of skipped iterations:   3 | number of nan iterations:   3 |", [NAN]),
        ("{'loss': nan, 'grad_norm': nan, 'learning_rate': 1e-05, 'epoch': 0.1}", [NAN]),
        ("step 120 loss=tensor(nan, device='cuda:0', grad_fn=<NllLossBackward0>)", [NAN]),
        ("Monitored metric val_loss = nan is not finite. Previous best value was 0.412.", [NAN]),
        ("Epoch 3:  40%|████      | 40/100 [00:10<00:15, 3.9it/s, loss=nan, v_num=1]", [NAN]),
        ("NVRM: Xid (PCI:0000:44:00): 79, GPU has fallen off the bus.", [XID]),
        (
            "NVRM: Xid (PCI:0000:3b:00): 48, pid=1234, An uncorrectable double bit error (DBE) has been",
            [XID],
        ),
        ("RuntimeError: CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`", [OOM]),
        ("RuntimeError: CUDA error: out of memory", [OOM]),
        ("ResourceExhaustedError: OOM when allocating tensor with shape[64,1024] on /job:localhost", [OOM]),
        (
            "jaxlib.xla_extension.XlaRuntimeError: RESOURCE_EXHAUSTED: Out of memory while trying",
            [OOM],
        ),
        ("DefaultCPUAllocator: not enough memory: you tried to allocate 7340032000 bytes.", [OOM]),
        (
            "torch.multiprocessing.spawn.ProcessExitedException: process 0 terminated with signal SIGKILL",
            [CHILD_FAILED, KILLED],
        ),
        (
            "[launch.py:321:sigkill_handler] ['python', 'train.py'] exits with return code = -9",
            [CHILD_FAILED, KILLED],
        ),
        (
            "subprocess.CalledProcessError: Command '['python', 'x.py']' returned non-zero exit status 1.",
            [CHILD_FAILED],
        ),
        ("Failed to initialize NVML: Driver/library version mismatch", [SMI_FAILED]),
        (
            "[PG 0 Rank 3] Timeout at NCCL work: 1234, last enqueued NCCL work: 1235, last completed NCCL",
            [NCCL_TIMEOUT],
        ),
        (
            "[Rank 1] NCCL watchdog thread terminated with exception: CUDA error: an illegal memory access",
            [NCCL_ERROR],
        ),
        ("node-1:99:99 [3] NCCL WARN Cuda failure 'out of memory'", [OOM, NCCL_ERROR]),
        ("Killed", [KILLED]),
        (
            "python3 invoked oom-killer: gfp_mask=0x100cca(GFP_HIGHUSER_MOVABLE), order=0, oom_score_adj=0",
            [KILLED],
        ),
    ],
)
def test_failure_wordings_are_events(line: str, kinds: list[EventKind]) -> None:
    assert _kinds(line) == kinds


def test_nccl_rank_from_the_text_is_used_only_without_a_prefix_rank() -> None:
    line = "[Rank 5] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=1, OpType=ALLREDUCE)"
    (from_text,) = EventDetector().feed(line, 7, None)
    assert (from_text.line, from_text.rank) == (7, 5)
    (from_prefix,) = EventDetector().feed(line, 7, 2)
    assert from_prefix.rank == 2


# --- repeats ------------------------------------------------------------------------------------------------

_TIMEOUT = "[Rank 0] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=96125, OpType=ALLREDUCE)"
_NCCL_WARN = "node-2:5776:5902 [0] transport/net_ib.cc:1296 NCCL WARN NET/IB : Got completion from peer"


def test_forty_lines_of_one_failure_give_one_event() -> None:
    detector = EventDetector()
    events = [event for number in range(1, 41) for event in detector.feed(_TIMEOUT, number, None)]
    assert _summary(events) == [(1, 0, NCCL_TIMEOUT)]


def test_a_repeat_after_a_quiet_window_is_reported_again() -> None:
    detector = EventDetector()
    first = detector.feed(_TIMEOUT, 1, None)
    within = detector.feed(_TIMEOUT, 1 + REPEAT_WINDOW_LINES, None)
    later = detector.feed(_TIMEOUT, 2 + 2 * REPEAT_WINDOW_LINES, None)
    assert (len(first), len(within), len(later)) == (1, 0, 1)


def test_the_window_slides_while_the_failure_keeps_being_printed() -> None:
    detector = EventDetector()
    step = REPEAT_WINDOW_LINES - 1
    events = [
        event for number in range(1, 20 * step, step) for event in detector.feed("loss: nan", number, 3)
    ]
    assert _summary(events) == [(1, 3, NAN)]


def test_ranks_are_reported_separately() -> None:
    detector = EventDetector()
    events = [event for rank in (0, 1, 0, 1) for event in detector.feed("iter 5: loss nan", 1, rank)]
    assert _summary(events) == [(1, 0, NAN), (1, 1, NAN)]


def test_a_timeout_after_a_generic_nccl_error_is_still_reported_but_not_the_reverse() -> None:
    detector = EventDetector()
    kinds = [
        event.kind
        for number, text in enumerate((_NCCL_WARN, _TIMEOUT, _NCCL_WARN), 1)
        for event in detector.feed(text, number, 0)
    ]
    assert kinds == [NCCL_ERROR, NCCL_TIMEOUT]


# --- tracebacks ---------------------------------------------------------------------------------------------


def test_a_traceback_gives_one_event_at_its_exception_line() -> None:
    lines = [
        "Traceback (most recent call last):",
        '  File "train.py", line 10, in <module>',
        "    main()",
        '  File "train.py", line 5, in main',
        "    data = load(path)",
        "           ^^^^^^^^^^",
        "FileNotFoundError: [Errno 2] No such file or directory: 'data/train.bin'",
        "epoch 1 done",
    ]
    events = _detect(lines)
    assert _summary(events) == [(7, None, TRACEBACK)]
    assert events[0].text == "FileNotFoundError: [Errno 2] No such file or directory: 'data/train.bin'"


def test_a_prefix_repeated_on_every_traceback_line_is_looked_through() -> None:
    lines = [
        "stderr: Traceback (most recent call last):",
        'stderr:   File "launch.py", line 8, in <module>',
        "stderr:     sys.exit(main())",
        "stderr: ValueError: bad launch config",
    ]
    events = _detect(lines)
    assert [(event.line, event.text) for event in events] == [(4, "ValueError: bad launch config")]


def test_chained_exceptions_are_one_failure() -> None:
    lines = [
        "Traceback (most recent call last):",
        '  File "a.py", line 1, in <module>',
        "    f()",
        "KeyError: 'lr'",
        "",
        "During handling of the above exception, another exception occurred:",
        "",
        "Traceback (most recent call last):",
        '  File "a.py", line 3, in <module>',
        "    g()",
        "RuntimeError: config incomplete",
    ]
    assert _summary(_detect(lines)) == [(4, None, TRACEBACK)]


def test_an_unfinished_traceback_is_reported_at_its_last_frame_when_input_ends() -> None:
    detector = EventDetector()
    assert detector.feed("Traceback (most recent call last):", 1, 2) == []
    assert detector.feed('  File "x.py", line 3, in f', 2, 2) == []
    (event,) = detector.finish()
    assert (event.line, event.rank, event.kind, event.text) == (2, 2, TRACEBACK, 'File "x.py", line 3, in f')
    assert detector.finish() == []


def test_a_traceback_drowned_by_other_output_is_closed_and_the_output_read() -> None:
    detector = EventDetector()
    detector.feed("Traceback (most recent call last):", 1, None)
    detector.feed('  File "x.py", line 3, in f', 2, None)
    detector.feed("    f()", 3, None)
    events: list[LogEvent] = []
    for number, text in enumerate(
        ["step 1 loss 2.0 ...", "step 2 ...", "step 3 ...", "step 4 ...", "Killed"], 4
    ):
        events.extend(detector.feed(text, number, None))
    assert _summary(events) == [(2, None, TRACEBACK), (8, None, KILLED)]


def test_a_traceback_on_one_rank_does_not_swallow_another_ranks_lines() -> None:
    detector = EventDetector()
    detector.feed("Traceback (most recent call last):", 1, 0)
    (oom,) = detector.feed("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.", 2, 1)
    assert (oom.rank, oom.kind) == (1, OOM)


# --- text ---------------------------------------------------------------------------------------------------


def test_event_text_is_sanitised() -> None:
    detector = EventDetector()
    token = "hf_AbCdEfGhIjKlMnOpQrStUvWxYz012345"
    (event,) = detector.feed(
        f"\x1b[31mRuntimeError: CUDA out of memory.\x1b[0m HF_TOKEN={token}\x07", 3, None
    )
    assert event.text == "RuntimeError: CUDA out of memory. HF_TOKEN=***"


def test_a_secret_in_a_long_line_is_masked_before_the_line_is_cut() -> None:
    key = "3f9a1c2e4b5d6a7f8091a2b3c4d5e6f708192a3b"
    line = "x" * 250 + f" WANDB_API_KEY={key} " + "RuntimeError: CUDA out of memory. " + "y" * 400
    (event,) = EventDetector().feed(line, 1, None)
    assert len(event.text) <= MAX_TEXT
    assert key[:8] not in event.text
    assert "CUDA out of memory" in event.text


# --- any input ----------------------------------------------------------------------------------------------

_LOG_PIECES = st.sampled_from(
    [
        "Traceback (most recent call last):",
        '  File "x.py", line 3, in f',
        "    f()",
        "    ^^^",
        "ValueError: x",
        "KeyboardInterrupt",
        "iter 5: loss nan",
        "grad_norm: nan",
        "NaN or Inf found",
        "CUDA out of memory",
        "Out of memory: Killed process 1 (python)",
        "[Rank 3] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=1)",
        "NCCL WARN",
        "failed (exitcode: -9)",
        "Killed",
        "NVRM: Xid (PCI:0000:44:00): 79",
        "No devices were found",
        "\x1b[31m",
        "\t",
        " ",
        "",
    ]
)


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(st.lists(_LOG_PIECES | st.text(max_size=12), max_size=4), st.none() | st.integers(0, 3)),
        max_size=30,
    )
)
def test_the_detector_never_raises_and_keeps_its_promises(lines: list[tuple[list[str], int | None]]) -> None:
    detector = EventDetector()
    events: list[LogEvent] = []
    for number, (parts, rank) in enumerate(lines, start=1):
        events.extend(detector.feed("".join(parts), number, rank))
    events.extend(detector.finish())
    for event in events:
        assert 1 <= event.line <= len(lines)
        assert len(event.text) <= MAX_TEXT
        assert "\x1b" not in event.text
    assert detector.finish() == []


@given(st.text(), st.none() | st.integers(-5, 5))
def test_any_text_is_safe_to_feed(text: str, rank: int | None) -> None:
    detector = EventDetector()
    detector.feed(text, 1, rank)
    detector.finish()


def test_a_traceback_header_without_frames_is_not_an_event() -> None:
    lines = [
        "see the Traceback (most recent call last): above for details",
        "step 1",
        "step 2",
        "step 3",
        "step 4",
    ]
    assert _detect(lines) == []
