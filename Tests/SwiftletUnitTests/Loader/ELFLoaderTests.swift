import SwiftletCore
import SwiftletArch
import SwiftletMemory
import Testing
@testable import SwiftletBoot

@Suite("Loader: ELF vmlinux and PVH") struct ELFLoaderTests {
    private func parse(_ image: [UInt8]) throws(BootError) -> ELFKernel { try ELFKernel.parse(image, path: "/x") }
    private func invalid(_ problem: BootError.ELFProblem) -> BootError { .invalidELF(path: "/x", problem: problem) }

    // MARK: Parsing

    @Test func parsesSegmentsAndThePVHNote() throws {
        let crafted = CraftedELF()
        let kernel = try parse(crafted.bytes)
        #expect(kernel.pvhEntry == 0x100_0040)
        #expect(kernel.segments.count == 2)
        #expect(kernel.segments[0].physicalAddress == 0x100_0000)
        #expect(kernel.segments[0].fileSize == 6000)
        #expect(kernel.segments[0].memorySize == 0x4000)
        #expect(kernel.segments[1].index == 1)
        #expect(kernel.end == 0x120_0000 + 300)
    }

    @Test(arguments: [(4, 4, true), (8, 4, true), (8, 8, false), (4, 8, false)])
    func findsTheNoteWithEitherDescriptorSizeAndAlignment(descriptorSize: Int, alignment: Int, leadingNote: Bool) throws {
        var crafted = CraftedELF()
        crafted.pvhDescriptorSize = descriptorSize
        crafted.noteAlignment = alignment
        crafted.leadingGNUNote = leadingNote
        #expect(try parse(crafted.bytes).pvhEntry == 0x100_0040)
    }

    @Test func takesTheLow32BitsOfA64BitDescriptor() throws {
        var crafted = CraftedELF()
        crafted.pvhDescriptorSize = 8
        crafted.pvhEntry = 0xffff_ffff_0100_0080
        #expect(try parse(crafted.bytes).pvhEntry == 0x100_0080)
    }

    @Test func refusesNonELFAndTruncatedFiles() {
        #expect(throws: BootError.notAKernel(path: "/x")) { try parse([]) }
        #expect(throws: BootError.notAKernel(path: "/x")) { try parse(LoaderFixtures.pseudoRandomBytes(100, seed: 3)) }
        let header = Array(CraftedELF().bytes.prefix(30))
        #expect(throws: BootError.truncated(path: "/x", fileSize: 30, expected: 64, source: "the ELF header")) {
            try parse(header)
        }
    }

    @Test func refusesTheWrongKindOfELF() {
        var crafted = CraftedELF()
        crafted.machine = 183
        #expect(throws: invalid(.wrongMachine(183))) { try parse(crafted.bytes) }
        #expect(invalid(.wrongMachine(183)).description.contains("e_machine is 183, not 62 (EM_X86_64)"))
        crafted = CraftedELF()
        crafted.elfClass = 1
        #expect(throws: invalid(.not64Bit(1))) { try parse(crafted.bytes) }
        crafted = CraftedELF()
        crafted.dataEncoding = 2
        #expect(throws: invalid(.notLittleEndian(2))) { try parse(crafted.bytes) }
        crafted = CraftedELF()
        crafted.type = 3
        #expect(throws: invalid(.notExecutable(3))) { try parse(crafted.bytes) }
    }

    @Test func refusesBadProgramHeaderTables() {
        var image = CraftedELF().bytes
        image.storeLittleEndian(UInt64(image.count), at: 32)
        #expect(throws: invalid(.programHeadersOutsideFile(offset: UInt64(image.count), size: 168))) { try parse(image) }
        image.storeLittleEndian(UInt64.max - 10, at: 32)
        #expect(throws: invalid(.programHeadersOutsideFile(offset: UInt64.max - 10, size: 168))) { try parse(image) }
        image = CraftedELF().bytes
        image.storeLittleEndian(UInt16(20), at: 54)
        #expect(throws: invalid(.badProgramHeaderSize(20))) { try parse(image) }
        image = CraftedELF().bytes
        image.storeLittleEndian(UInt16(0), at: 56)
        #expect(throws: invalid(.noProgramHeaders)) { try parse(image) }
        image.storeLittleEndian(UInt16(0xffff), at: 56)
        #expect(throws: invalid(.tooManyProgramHeaders(count: 0xffff, maximum: 256))) { try parse(image) }
    }

    @Test func refusesBadSegments() {
        let header0 = CraftedELF.programHeaderOffset(0)
        var crafted = CraftedELF()
        crafted.segments[0].memorySize = 100
        #expect(throws: invalid(.segmentFileSizeExceedsMemorySize(index: 0, fileSize: 6000, memorySize: 100))) {
            try parse(crafted.bytes)
        }
        // p_offset + p_filesz overflows.
        var image = CraftedELF().bytes
        image.storeLittleEndian(UInt64(0xffff_ffff_ffff_ff00), at: header0 + 8)
        #expect(throws: invalid(.segmentOutsideFile(index: 0, offset: 0xffff_ffff_ffff_ff00, size: 6000))) {
            try parse(image)
        }
        // A huge p_filesz (with an equally huge p_memsz).
        image = CraftedELF().bytes
        image.storeLittleEndian(UInt64.max, at: header0 + 32)
        image.storeLittleEndian(UInt64.max, at: header0 + 40)
        #expect(throws: invalid(.segmentOutsideFile(index: 0, offset: 240, size: UInt64.max))) { try parse(image) }
        // p_paddr + p_memsz overflows.
        image = CraftedELF().bytes
        image.storeLittleEndian(UInt64(0xffff_ffff_ffff_f000), at: header0 + 24)
        #expect(throws: invalid(.segmentAddressOverflow(index: 0, address: 0xffff_ffff_ffff_f000, size: 0x4000))) {
            try parse(image)
        }
        // A note segment past the end of the file.
        image = CraftedELF().bytes
        let noteHeader = CraftedELF.programHeaderOffset(2)
        image.storeLittleEndian(UInt64.max - 1, at: noteHeader + 8)
        #expect(throws: invalid(.segmentOutsideFile(index: 2, offset: UInt64.max - 1,
                                                    size: image.loadLittleEndian(UInt64.self, at: noteHeader + 32)))) {
            try parse(image)
        }
        crafted = CraftedELF()
        crafted.segments = []
        #expect(throws: invalid(.noLoadableSegments)) { try parse(crafted.bytes) }
    }

    @Test func refusesMissingOrBadPVHNotes() {
        var crafted = CraftedELF()
        crafted.pvhEntry = nil
        #expect(throws: BootError.noPVHNote(path: "/x")) { try parse(crafted.bytes) }
        #expect(BootError.noPVHNote(path: "/x").description
            == "kernel \"/x\": ELF vmlinux has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); use the bzImage")
        crafted = CraftedELF()
        crafted.pvhDescriptorSize = 2
        #expect(throws: invalid(.badPVHNote(descriptorSize: 2))) { try parse(crafted.bytes) }
        crafted = CraftedELF()
        crafted.pvhEntry = 0x500_0000
        #expect(throws: invalid(.entryOutsideSegments(0x500_0000))) { try parse(crafted.bytes) }
        // A note whose name size runs far past the segment: scanning stops without finding anything.
        crafted = CraftedELF()
        crafted.leadingGNUNote = true
        var image = crafted.bytes
        let noteOffset = Int(image.loadLittleEndian(UInt64.self, at: CraftedELF.programHeaderOffset(2) + 8))
        image.storeLittleEndian(UInt32.max, at: noteOffset)
        #expect(throws: BootError.noPVHNote(path: "/x")) { try parse(image) }
        image.storeLittleEndian(UInt32(4), at: noteOffset)
        image.storeLittleEndian(UInt32.max - 2, at: noteOffset + 4)
        #expect(throws: BootError.noPVHNote(path: "/x")) { try parse(image) }
    }

    @Test func mutatedImagesNeverTrap() {
        let original = CraftedELF().bytes
        let noteOffset = Int(original.loadLittleEndian(UInt64.self, at: CraftedELF.programHeaderOffset(2) + 8))
        var generator = LoaderSeededGenerator(seed: 1234)
        for round in 0..<3000 {
            var image = original
            for _ in 0..<Int.random(in: 1...6, using: &generator) {
                let offset = round % 2 == 0
                    ? Int.random(in: 0..<(64 + 3 * 56), using: &generator)
                    : Int.random(in: noteOffset..<original.count, using: &generator)
                image[offset] = UInt8.random(in: 0...255, using: &generator)
            }
            if round % 5 == 0 { image = Array(image.prefix(Int.random(in: 0...image.count, using: &generator))) }
            _ = try? parse(image)
        }
    }

    // MARK: Loading

    @Test func loadsSegmentsStartInfoMemoryMapAndInitrd() throws {
        let memory = try LoaderFixtures.memory()
        let crafted = CraftedELF()
        // Dirty the bss so we can see it zeroed.
        try memory.fill(0xaa, count: 0x4000, at: GuestAddress(0x100_0000))
        let initrd = LoaderFixtures.pseudoRandomBytes(5000, seed: 11)
        let e820 = LoaderFixtures.e820()
        let entry = try LoaderFixtures.load(kernel: crafted.bytes, initrd: initrd, commandLine: "root=/dev/vda",
                                            memory: memory, rsdp: 0xe_0000, e820: e820)
        #expect(entry == .pvh(entry: 0x100_0040, startInfo: 0x7000))

        #expect(try memory.read(count: 6000, at: GuestAddress(0x100_0000)) == crafted.segments[0].data)
        #expect(try memory.read(count: 0x4000 - 6000, at: GuestAddress(0x100_0000 + 6000)).allSatisfy { $0 == 0 })
        #expect(try memory.read(count: 300, at: GuestAddress(0x120_0000)) == crafted.segments[1].data)
        #expect(try memory.read(count: 14, at: GuestAddress(0x2_0000)) == Array("root=/dev/vda".utf8) + [0])
        let initrdAddress: UInt64 = (64 << 20) - 0x2000
        #expect(try memory.read(count: initrd.count, at: GuestAddress(initrdAddress)) == initrd)

        let info = try memory.read(count: 0x60 + 3 * 24, at: GuestAddress(0x7000))
        #expect(info.loadLittleEndian(UInt32.self, at: 0x00) == 0x336e_c578)  // magic
        #expect(info.loadLittleEndian(UInt32.self, at: 0x04) == 1)  // version
        #expect(info.loadLittleEndian(UInt32.self, at: 0x08) == 0)  // flags
        #expect(info.loadLittleEndian(UInt32.self, at: 0x0c) == 1)  // nr_modules
        #expect(info.loadLittleEndian(UInt64.self, at: 0x10) == 0x7040)  // modlist_paddr
        #expect(info.loadLittleEndian(UInt64.self, at: 0x18) == 0x2_0000)  // cmdline_paddr
        #expect(info.loadLittleEndian(UInt64.self, at: 0x20) == 0xe_0000)  // rsdp_paddr
        #expect(info.loadLittleEndian(UInt64.self, at: 0x28) == 0x7060)  // memmap_paddr
        #expect(info.loadLittleEndian(UInt32.self, at: 0x30) == 3)  // memmap_entries
        #expect(info.loadLittleEndian(UInt64.self, at: 0x40) == initrdAddress)  // module paddr
        #expect(info.loadLittleEndian(UInt64.self, at: 0x48) == 5000)  // module size
        #expect(info.loadLittleEndian(UInt64.self, at: 0x50) == 0)  // module cmdline_paddr
        for (index, e) in e820.enumerated() {
            let base = 0x60 + 24 * index
            #expect(info.loadLittleEndian(UInt64.self, at: base) == e.address)
            #expect(info.loadLittleEndian(UInt64.self, at: base + 8) == e.size)
            #expect(info.loadLittleEndian(UInt32.self, at: base + 16) == e.kind.rawValue)
        }
    }

    @Test func loadsABssOnlySegment() throws {
        let memory = try LoaderFixtures.memory()
        var crafted = CraftedELF()
        crafted.segments.append(.init(address: 0x130_0000, data: [], memorySize: 0x1000))
        try memory.fill(0xaa, count: 0x1000, at: GuestAddress(0x130_0000))
        try LoaderFixtures.load(kernel: crafted.bytes, memory: memory)
        #expect(try memory.read(count: 0x1000, at: GuestAddress(0x130_0000)).allSatisfy { $0 == 0 })
    }

    @Test func refusesSegmentsOutsideRAM() throws {
        let memory = try LoaderFixtures.memory()
        for address: UInt64 in [0x800_0000, 0x8000, 0x3ff_f000] {
            var crafted = CraftedELF()
            crafted.segments[1].address = address
            crafted.segments[1].memorySize = 0x2000
            let error = LoaderFixtures.bootError { try LoaderFixtures.load(kernel: crafted.bytes, memory: memory) }
            guard case let .segmentOutsideRAM(_, index, segmentAddress, size, ramStart, ramEnd) = error else {
                Issue.record("unexpected \(String(describing: error))")
                continue
            }
            #expect(index == 1 && segmentAddress == address && size == 0x2000)
            #expect(ramStart == 0x10_0000 && ramEnd == 64 << 20)
        }
        // lowRAMEnd claims more than the guest has: GuestMemory's bounds check still catches it.
        var crafted = CraftedELF()
        crafted.segments[1].address = 0x500_0000
        let error = LoaderFixtures.bootError {
            try LoaderFixtures.load(kernel: crafted.bytes, memory: memory, lowRAMEnd: 0xc000_0000)
        }
        guard case .segmentOutsideRAM = error else { Issue.record("unexpected \(String(describing: error))"); return }
    }

    @Test func refusesTooLongCommandLineAndInitrdThatDoesNotFit() throws {
        let memory = try LoaderFixtures.memory()
        #expect(throws: BootError.commandLineTooLong(length: 2048, maximum: 2047)) {
            try LoaderFixtures.load(kernel: CraftedELF().bytes, commandLine: String(repeating: "x", count: 2048), memory: memory)
        }
        let error = LoaderFixtures.bootError {
            try LoaderFixtures.load(kernel: CraftedELF().bytes, initrd: [UInt8](repeating: 1, count: 0x2000),
                                    memory: memory, lowRAMEnd: 0x120_2000)
        }
        guard case let .initrdDoesNotFit(_, size, floor, ceiling, fromAddrMax) = error else {
            Issue.record("unexpected \(String(describing: error))")
            return
        }
        #expect(size == 0x2000 && floor == 0x120_012c && ceiling == 0x120_2000 && !fromAddrMax)
    }
}
