"""The volatility step names an arm64 image as beyond volatility3 2.28 (documented format: the kernel's VMCOREINFO
note as arch_crash_save_vmcoreinfo() writes it), instead of reporting an empty process list."""

from collectors.parsers.volatility import _image_architecture

NOTE = b"\x0b\x00\x00\x00%s\x00\x00\x00\x00\x00\x00\x00VMCOREINFO\x00\x00"


def _image(tmp_path, info: bytes):
    path = tmp_path / "ram.lime"
    path.write_bytes(b"\xa5" * 4096 + NOTE % len(info).to_bytes(4, "little") + info + b"\0" * 4096)
    return str(path)


def test_arm64_vmcoreinfo_in_the_image_names_aarch64(tmp_path):
    arm64 = (b"OSRELEASE=6.1.0-57-cloud-arm64\nPAGESIZE=4096\nNUMBER(VA_BITS)=48\n"
             b"NUMBER(kimage_voffset)=0xffffae0d24000000\n")
    assert _image_architecture(_image(tmp_path, arm64)) == "aarch64"


def test_x86_vmcoreinfo_or_none_is_not_aarch64(tmp_path):
    x86 = b"OSRELEASE=6.1.0-56-cloud-amd64\nPAGESIZE=4096\nNUMBER(phys_base)=0\nNUMBER(pgtable_l5_enabled)=0\n"
    assert _image_architecture(_image(tmp_path, x86)) is None
    assert _image_architecture(str(tmp_path / "absent")) is None
