"""A few thousand mutated inputs per reader in every `make test`: each ends in an EdgeSDKError or succeeds.

`make fuzz` runs 100,000 per reader (tests/fuzz/run.py); a finding there becomes a regression test in
tests/kernel/test_hostile_inputs.py or tests/device_profiles/test_gguf_hostile.py.
"""

from __future__ import annotations

import pytest
from fuzzlib import describe, fuzz, readers

# Inputs per reader: seconds each (the archive reader writes and extracts a file per input, so fewer).
COUNTS = {"manifest": 3000, "signature": 3000, "archive": 1500, "gguf_header": 3000, "gguf_source": 2000}


@pytest.fixture(scope="module")
def all_readers(tmp_path_factory):
    pytest.importorskip("gguf")
    return readers(tmp_path_factory.mktemp("fuzz"))


@pytest.mark.parametrize("name", list(COUNTS))
def test_reader_raises_only_sdk_errors(all_readers, name):
    report = fuzz(all_readers[name], count=COUNTS[name], seed=18, hang_s=5.0)
    assert not report.findings, f"{name}: {len(report.findings)} findings\n{describe(report.findings)}"
    assert report.inputs == COUNTS[name]
    # The mutations must reach past the first check: some inputs are refused, and some still parse.
    assert report.refused > COUNTS[name] // 10
    assert report.accepted > 0
