"""The parity tests record ``(label, max abs difference, max |logit|)`` here; the table is
printed at the end of the session (``make test-interop``)."""

import contextlib

# MindSpore must be loaded before Paddle: the other way round, MindSpore's CPU kernels fail to
# load (both bundle oneDNN; "undefined symbol: dnnl_threadpool_interop_stream_create").
with contextlib.suppress(ImportError):
    import mindspore  # noqa: F401

RESULTS: list[tuple[str, float, float]] = []


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    terminalreporter.section("parity with the vendor frameworks")
    terminalreporter.write_line(f"{'file read by inception':<64} {'max abs diff':>12} {'max |logit|':>11}")
    for label, diff, scale in RESULTS:
        terminalreporter.write_line(f"{label:<64} {diff:>12.2e} {scale:>11.3g}")
