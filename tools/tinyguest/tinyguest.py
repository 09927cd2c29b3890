"""Tiny hand-assembled x86 guests as ELF files with a PVH entry note, for direct runs on /dev/kvm.

The code is loaded at 1 MiB and entered in 32-bit protected mode with paging off (the PVH entry),
so a few hand-encoded instructions are a whole guest. Used by make-tiny-guest.py (benchmarks) and
tests/hostile (process-level tests of the swiftlet binary).
"""
import struct

LOAD = 0x100000
COM1 = 0x3F8


def elf(code: bytes) -> bytes:
    """An ELF64 x86-64 executable: one PT_LOAD holding `code` at 1 MiB and the Xen PVH entry note."""
    note = struct.pack("<III", 4, 8, 18) + b"Xen\0" + struct.pack("<Q", LOAD)
    note += b"\0" * (-len(note) % 8)
    eh, ph = 64, 56
    note_off = eh + 2 * ph
    code_off = (note_off + len(note) + 15) // 16 * 16
    out = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
    out += struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, LOAD, eh, 0, 0, eh, ph, 2, 64, 0, 0)
    out += struct.pack("<IIQQQQQQ", 1, 5, code_off, LOAD, LOAD, len(code), len(code), 0x1000)
    out += struct.pack("<IIQQQQQQ", 4, 4, note_off, 0, 0, len(note), len(note), 4)
    out += note
    return out + b"\0" * (code_off - len(out)) + code


# 32-bit encodings.
def mov_dx(port: int) -> bytes:
    return b"\x66\xba" + struct.pack("<H", port)


def mov_al(value: int) -> bytes:
    return bytes([0xB0, value])


OUT_DX_AL = b"\xee"
IN_AL_DX = b"\xec"
CLI = b"\xfa"
HLT_FOREVER = b"\xf4\xeb\xfd"                       # hlt; jmp back to hlt


def jmp_back(to_offset: int, from_offset: int) -> bytes:
    """A short jump, placed at `from_offset`, to `to_offset` (both offsets into the code)."""
    return bytes([0xEB, (to_offset - (from_offset + 2)) & 0xFF])


def print_blind(text: bytes) -> bytes:
    """Writes `text` to COM1 without waiting for THRE (as a hostile guest would)."""
    return mov_dx(COM1) + b"".join(mov_al(c) + OUT_DX_AL for c in text)


def print_polled(text: bytes) -> bytes:
    """Writes `text` to COM1 the way a driver does: wait for LSR.THRE before each byte."""
    code = b""
    for c in text:
        code += mov_dx(COM1 + 5) + IN_AL_DX + b"\xa8\x20\x74\xfb"   # in al,dx; test al,0x20; jz back to in
        code += mov_dx(COM1) + mov_al(c) + OUT_DX_AL
    return code


def power_off() -> bytes:
    """ACPI S5 through the sleep-control register."""
    return mov_dx(0x600) + mov_al(0x34) + OUT_DX_AL + HLT_FOREVER


def i8042_reset() -> bytes:
    return mov_dx(0x64) + mov_al(0xFE) + OUT_DX_AL + HLT_FOREVER


def idle(banner: bytes = b"ready\n") -> bytes:
    """Prints `banner`, then halts forever with interrupts off (never reads its serial port)."""
    return print_blind(banner) + CLI + HLT_FOREVER


def flood(banner: bytes = b"flood\n") -> bytes:
    """Prints `banner`, then writes 'x' to COM1 forever without looking at THRE."""
    code = print_blind(banner) + mov_al(ord("x"))
    loop = len(code)
    code += OUT_DX_AL
    return code + jmp_back(loop, len(code))


def counted_lines(line: bytes, count: int) -> bytes:
    """Prints `line` `count` times, waiting for THRE before each byte, then powers off."""
    assert 0 < count < 2**31
    code = b"\xb9" + struct.pack("<I", count)          # mov ecx, count
    loop = len(code)
    code += print_polled(line)
    code += b"\x49"                                    # dec ecx
    rel = loop - (len(code) + 6)
    code += b"\x0f\x85" + struct.pack("<i", rel)       # jnz loop
    return code + power_off()


def echo_bytes(count: int) -> bytes:
    """Opens COM1 as a driver does (IER.ERBFI and MCR.OUT2 set, interrupts off in the CPU), reads
    `count` bytes (waiting for LSR.DR before each) and writes each back (waiting for THRE), then
    powers off: console input must arrive whole and in order."""
    assert 0 < count < 2**31
    code = CLI + mov_dx(COM1 + 1) + mov_al(0x01) + OUT_DX_AL + mov_dx(COM1 + 4) + mov_al(0x08) + OUT_DX_AL
    code += b"\xb9" + struct.pack("<I", count)         # mov ecx, count
    loop = len(code)
    code += mov_dx(COM1 + 5) + IN_AL_DX + b"\xa8\x01\x74\xfb"   # in al,dx; test al,1 (DR); jz back to in
    code += mov_dx(COM1) + IN_AL_DX + b"\x88\xc3"                # in al,dx; mov bl,al
    code += mov_dx(COM1 + 5) + IN_AL_DX + b"\xa8\x20\x74\xfb"   # wait for THRE
    code += mov_dx(COM1) + b"\x88\xd8" + OUT_DX_AL               # mov al,bl; out dx,al
    code += b"\x49"                                    # dec ecx
    rel = loop - (len(code) + 6)
    code += b"\x0f\x85" + struct.pack("<i", rel)       # jnz loop
    return code + power_off()
