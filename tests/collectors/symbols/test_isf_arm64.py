"""The symbol table for arm64 kernels (issue 18): where arm64 links its image, so that kallsyms addresses are
moved back to link time as dwarf2json's table has them. Figures from Debian 12's arm64 cloud kernel
(6.1.0-57-cloud-arm64, 48-bit VAs) in a QEMU virt guest: _stext 0xffffae0d64210000 and VMCOREINFO's
KERNELOFFSET 0x2e0d5c200000, so _text was linked at 0xffff800008000000 (MODULES_END in its VMCOREINFO).
tests/e2e/test_aarch64_qemu.py builds the table from that kernel's own BTF and memory."""

from __future__ import annotations

from test_btf import every_kind_blob

from collectors.symbols.isf import _banner_release, build_isf, kaslr_shift_from_kallsyms, link_time_text

ARM64 = "CONFIG_ARM64=y\nCONFIG_ARM64_VA_BITS_48=y\nCONFIG_ARM64_VA_BITS=48\nCONFIG_RELOCATABLE=y\n"
BANNER = ("Linux version 6.1.0-57-cloud-arm64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14+deb12u1) "
          "12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP Debian 6.1.192-3 (2026-11-26)\n")


def test_arm64_link_address_by_va_bits_and_version():
    assert link_time_text(ARM64, release="6.1.0-57-cloud-arm64") == 0xFFFF800008000000
    # Linux 6.5 grew the modules area in front of the image from 128 MiB to 2 GiB
    assert link_time_text(ARM64, release="6.12.48+deb13-cloud-arm64") == 0xFFFF800080000000
    assert link_time_text(ARM64.replace("=48", "=39"), release="5.15.0") == 0xFFFFFFC008000000
    assert link_time_text(ARM64.replace("=48", "=52"), release="6.1.0") == 0xFFFF800008000000  # VA_BITS_MIN
    assert link_time_text(ARM64) is None  # version unknown: not guessed
    assert _banner_release(BANNER.encode()) == "6.1.0-57-cloud-arm64"


def test_arm64_kaslr_shift_from_stext_alone():
    """Without CONFIG_KALLSYMS_ALL arm64's kallsyms has _stext but no _text; _stext is 64 KiB past _text."""
    syms = {"_stext": (0xFFFFAE0D64210000, "T")}
    shift, notes = kaslr_shift_from_kallsyms(syms, ARM64, "6.1.0-57-cloud-arm64")
    assert shift == 0x2E0D5C200000 and notes == []
    shift, notes = kaslr_shift_from_kallsyms({"_text": (0xFFFFAE0D64200000, "T")}, ARM64, "6.1.0-57-cloud-arm64")
    assert shift == 0x2E0D5C200000 and notes == []


def test_arm64_table_has_link_time_addresses():
    data, _ = every_kind_blob()
    kallsyms = ("ffffae0d64210000 T _stext\nffffae0d645a1314 T __arm64_sys_read\n"
                "ffffae0d65a28c80 D init_task\nffffae0d64f33148 D linux_banner\nffffae0d6558f000 D swapper_pg_dir\n")
    notes: list[str] = []
    isf = build_isf(data, kallsyms, BANNER, kernel_config=ARM64, notes=notes)
    sym = isf["symbols"]
    assert isf["metadata"]["producer"]["kaslr_shift"] == "0x2e0d5c200000", notes
    assert sym["_stext"]["address"] == 0xFFFF800008010000
    assert sym["init_task"]["address"] == 0xFFFF800009828C80
    assert sym["swapper_pg_dir"]["address"] == 0xFFFF80000938F000
    assert not any("unknown architecture" in n for n in notes), notes


def test_arm64_table_says_volatility3_cannot_read_the_image(tmp_path):
    """The table is built all the same; its record and a warning say that volatility3 2.28 cannot use it."""
    from test_btf import _fake_root, _meminfo, _symbols_items

    from collectors.base import Blob, Problem, Record

    root = _fake_root(tmp_path, every_kind_blob()[0])
    _meminfo(root, 8 << 20)
    items = _symbols_items(root, machine="aarch64")
    record = next(i.data for i in items if isinstance(i, Record))
    assert record["status"] == "built" and record["machine"] == "aarch64", record
    assert "cannot read AArch64" in record["volatility3"]
    assert any(isinstance(i, Blob) for i in items)
    assert any(isinstance(i, Problem) and i.level == "warning" and "AArch64" in i.message for i in items)
    x86 = _symbols_items(root, machine="x86_64")
    assert not any(isinstance(i, Problem) and "AArch64" in i.message for i in x86)
    assert "volatility3" not in next(i.data for i in x86 if isinstance(i, Record))


def test_arm64_warning_also_when_no_table_is_built(tmp_path):
    from test_btf import _fake_root, _symbols_items

    from collectors.base import Problem, Record

    root = _fake_root(tmp_path, None)  # no BTF
    items = _symbols_items(root, machine="aarch64")
    assert next(i.data for i in items if isinstance(i, Record))["status"] == "no_btf"
    assert any(isinstance(i, Problem) and i.level == "warning" and "AArch64" in i.message for i in items)
