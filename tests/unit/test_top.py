"""pyksm top: rates between samples and the Prometheus textfile format."""

from __future__ import annotations

from pathlib import Path

from pyksm.report import top


def test_rates_and_prometheus_text(tmp_path: Path) -> None:
    a = top.Sample(10.0, {"pages_sharing": 5, "pages_scanned": 1000, "hints_received": 10})
    b = top.Sample(
        12.0,
        {"pages_sharing": 7, "pages_scanned": 3000, "hints_received": 50},
        {42: {"comm": 'qemu "a"', "ksm_merging_pages": 3, "ksm_process_profit": 8192}},
    )
    r = top.rates(a, b)
    assert r == {"pages_scanned": 1000.0, "hints_received": 20.0}
    text = top.prometheus(b, r)
    assert "# TYPE pyksm_ksm_pages_sharing gauge\npyksm_ksm_pages_sharing 7\n" in text
    assert "# TYPE pyksm_ksm_hints_received counter\npyksm_ksm_hints_received 50\n" in text
    assert 'pyksm_process_ksm_merging_pages{pid="42",comm="qemu \\"a\\""} 3\n' in text
    assert "pyksm_rate_hints_received_per_second 20.000\n" in text
    out = tmp_path / "ksm.prom"
    top.write_textfile(out, text)
    assert out.read_text() == text and not (tmp_path / "ksm.prom.tmp").exists()


def test_no_rates_without_a_previous_sample() -> None:
    assert top.rates(None, top.Sample(1.0, {"pages_scanned": 5})) == {}
