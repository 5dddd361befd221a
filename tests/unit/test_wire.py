"""The hint record is defined once in Python (pyksm.kernel.wire) and once in C
(the series' UAPI header). Compile the C definition and compare layouts via DWARF."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from pyksm.kernel import wire

REPO = Path(__file__).resolve().parents[2]


def added_file_defining(struct: str) -> tuple[str, str]:
    """(path, text) of the file a series patch adds that defines ``struct``."""
    series = REPO / "kernel-patches" / "series"
    names = [
        ln.strip()
        for ln in series.read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    for name in names:
        text = (REPO / "kernel-patches" / name).read_text()
        for m in re.finditer(
            r"^--- /dev/null\n\+\+\+ b/(\S+)\n@@[^\n]*\n((?:[+][^\n]*\n)+)", text, re.M
        ):
            body = "".join(line[1:] + "\n" for line in m.group(2).splitlines())
            if f"struct {struct} {{" in body:
                return m.group(1), body
    pytest.fail(f"no patch in the series adds a file defining struct {struct}")


def dwarf_layout(obj: Path, struct: str) -> list[tuple[str, int, int]]:
    with obj.open("rb") as fh:
        dwarf = ELFFile(fh).get_dwarf_info()
        for cu in dwarf.iter_CUs():
            for die in cu.iter_DIEs():
                name = die.attributes.get("DW_AT_name")
                if die.tag == "DW_TAG_structure_type" and name and name.value.decode() == struct:
                    fields = []
                    for m in die.iter_children():
                        t = m.get_DIE_from_attribute("DW_AT_type")
                        while "DW_AT_byte_size" not in t.attributes:
                            t = t.get_DIE_from_attribute("DW_AT_type")
                        fields.append(
                            (
                                m.attributes["DW_AT_name"].value.decode(),
                                m.attributes["DW_AT_data_member_location"].value,
                                t.attributes["DW_AT_byte_size"].value,
                            )
                        )
                    size = die.attributes["DW_AT_byte_size"].value
                    fields.append(("<sizeof>", 0, size))
                    return fields
    raise AssertionError(f"struct {struct} not in DWARF of {obj}")


def test_python_record_matches_the_kernel_uapi_struct(tmp_path: Path) -> None:
    path, header = added_file_defining(wire.C_NAME)
    assert path.startswith("include/uapi/"), f"{path}: the wire format belongs in UAPI"
    h = tmp_path / "hint.h"
    h.write_text(header)
    c = tmp_path / "probe.c"
    c.write_text(f'#include "hint.h"\nstruct {wire.C_NAME} probe_record;\n')
    obj = tmp_path / "probe.o"
    subprocess.run(["gcc", "-g", "-c", "-o", str(obj), str(c)], check=True, cwd=tmp_path)
    expected = [*wire.FIELDS, ("<sizeof>", 0, wire.RECORD_SIZE)]
    assert dwarf_layout(obj, wire.C_NAME) == expected


def test_pack_roundtrip_and_little_endian() -> None:
    h = wire.Hint(pid=0x01020304, start=0x7F0000001000, length=8192)
    raw = h.pack()
    assert len(raw) == 24
    assert raw[:4] == bytes([4, 3, 2, 1])
    assert wire.unpack_many(raw * 3) == [h] * 3
    with pytest.raises(ValueError, match="not a multiple of 24"):
        wire.unpack_many(raw[:23])
