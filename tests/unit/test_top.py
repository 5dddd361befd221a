"""pyksm top: rates between samples and the Prometheus exposition (file and HTTP)."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from rich.console import Console

from pyksm.monitor import top


def _samples() -> tuple[top.Sample, top.Sample]:
    a = top.Sample(10.0, {"pages_sharing": 5, "pages_scanned": 1000, "hints_received": 10})
    b = top.Sample(
        12.0,
        {
            "pages_sharing": 7,
            "pages_scanned": 3000,
            "hints_received": 50,
            "full_scans": 3,
            "sleep_millisecs": 20,
            "hint_capacity": 4096,
        },
        {42: {"comm": 'qemu "a"', "ksm_merging_pages": 3, "ksm_process_profit": 8192}},
    )
    return a, b


def test_rates_and_prometheus_text(tmp_path: Path) -> None:
    a, b = _samples()
    r = top.rates(a, b)
    assert r == {"pages_scanned": 1000.0, "hints_received": 20.0}
    text = top.prometheus(b, r)
    # node_exporter's ksmd names under pyksm's prefix, with HELP and TYPE.
    assert "# TYPE pyksm_ksmd_pages_sharing gauge\npyksm_ksmd_pages_sharing 7.0\n" in text
    assert "# HELP pyksm_ksmd_pages_sharing /sys/kernel/mm/ksm/pages_sharing" in text
    assert "# TYPE pyksm_ksmd_full_scans_total counter\npyksm_ksmd_full_scans_total 3.0\n" in text
    assert "pyksm_ksmd_sleep_seconds 0.02\n" in text
    # KSM++ values are pyksm_hints_*.
    assert "# TYPE pyksm_hints_received_total counter\npyksm_hints_received_total 50.0\n" in text
    assert "pyksm_hints_capacity 4096.0\n" in text
    assert 'pyksm_process_ksm_merging_pages{comm="qemu \\"a\\"",pid="42"} 3.0\n' in text
    assert "pyksm_rate_hints_received_per_second 20.0\n" in text
    out = tmp_path / "ksm.prom"
    top.write_textfile(out, text)
    assert out.read_text() == text and not (tmp_path / "ksm.prom.tmp").exists()


def test_metric_names_mirror_node_exporter() -> None:
    for knob in top.NODE_EXPORTER_KSMD:
        name = top.metric_name(knob)
        assert name.startswith("pyksm_ksmd_"), name
    assert top.metric_name("hint_pages_merged") == "pyksm_hints_pages_merged"


def test_listen_serves_the_latest_sample_over_http() -> None:
    _, b = _samples()
    col = top.KsmCollector()
    col.sample = b
    server, thread = top.serve(("127.0.0.1", 0), col)
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            body = resp.read().decode()
        assert "pyksm_ksmd_pages_sharing 7.0" in body
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_run_once_writes_the_textfile(tmp_path: Path) -> None:
    if not top.ksm.Ksm().available():
        return
    prom = tmp_path / "ksm.prom"
    top.run(1.0, None, prom, Console(file=open("/dev/null", "w")), once=True)  # noqa: SIM115
    assert "pyksm_ksmd_pages_sharing" in prom.read_text()


def test_no_rates_without_a_previous_sample() -> None:
    assert top.rates(None, top.Sample(1.0, {"pages_scanned": 5})) == {}
