#!/usr/bin/env python3
"""Writes a tiny PVH ELF guest for direct measurements on /dev/kvm (lab-and-peers.md §8).

The guest starts in 32-bit protected mode at 1 MiB, prints BOOT-DONE on COM1, writes to the
isa-debug-exit port 0xf4 (QEMU exits there; Swiftlet ignores it) and then pulses the i8042 reset
line (Swiftlet exits there). Usage: make-tiny-guest.py OUT.elf
"""
import struct, sys

LOAD = 0x100000
code = b"\x66\xba\xf8\x03"                      # mov dx, 0x3f8
for ch in b"BOOT-DONE\n":
    code += b"\xb0" + bytes([ch]) + b"\xee"      # mov al, ch; out dx, al
code += b"\x66\xba\xf4\x00\xb0\x00\xee"          # mov dx, 0xf4; mov al, 0; out dx, al
code += b"\x66\xba\x64\x00\xb0\xfe\xee"          # mov dx, 0x64; mov al, 0xfe; out dx, al
code += b"\xf4\xeb\xfd"                          # hlt; jmp hlt

note = struct.pack("<III", 4, 8, 18) + b"Xen\0" + struct.pack("<Q", LOAD)
note += b"\0" * (-len(note) % 8)
eh, ph = 64, 56
note_off = eh + 2 * ph
code_off = (note_off + len(note) + 15) // 16 * 16
elf = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
elf += struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, LOAD, eh, 0, 0, eh, ph, 2, 64, 0, 0)
elf += struct.pack("<IIQQQQQQ", 1, 5, code_off, LOAD, LOAD, len(code), len(code), 0x1000)
elf += struct.pack("<IIQQQQQQ", 4, 4, note_off, 0, 0, len(note), len(note), 4)
elf += note
elf += b"\0" * (code_off - len(elf)) + code
open(sys.argv[1], "wb").write(elf)
