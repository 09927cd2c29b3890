#!/usr/bin/env python3
"""Writes a tiny PVH ELF guest for direct measurements on /dev/kvm.

The guest starts in 32-bit protected mode at 1 MiB, prints BOOT-DONE on COM1, writes to the
isa-debug-exit port 0xf4 (QEMU exits there; Swiftlet ignores it) and then pulses the i8042 reset
line (Swiftlet exits there). Usage: make-tiny-guest.py OUT.elf
"""
import sys

import tinyguest as g

code = g.print_blind(b"BOOT-DONE\n")
code += g.mov_dx(0xF4) + g.mov_al(0) + g.OUT_DX_AL
code += g.i8042_reset()
open(sys.argv[1], "wb").write(g.elf(code))
