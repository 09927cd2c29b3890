import Foundation
import SwiftletCore
import SwiftletArch
import SwiftletMemory
import Testing
@testable import SwiftletBoot

@Suite("Loader: bzImage") struct BzImageLoaderTests {
    private func parse(_ image: [UInt8], path: String = "/x") throws(BootError) -> BzImageHeader {
        try BzImageHeader.parse(Array(image.prefix(BzImageHeader.bytesNeeded)), fileSize: UInt64(image.count), path: path)
    }

    // MARK: Parsing

    @Test func parsesACraftedHeader() throws {
        let crafted = CraftedBzImage()
        let header = try parse(crafted.bytes)
        #expect(header.version == 0x020f)
        #expect(header.versionString == "2.15")
        #expect(header.setupSectors == 1)
        #expect(header.setupSize == 1024)
        #expect(header.kernelSize == 8192)
        #expect(header.hasKernel64Entry)
        #expect(header.canBeLoadedAbove4G)
        #expect(header.isRelocatable)
        #expect(header.kernelAlignment == 0x20_0000)
        #expect(header.initrdAddressMax == 0x7fff_ffff)
        #expect(header.commandLineSize == 2047)
        #expect(header.preferredAddress == 0x100_0000)
        #expect(header.initSize == 0x20_0000)
        // The header runs from 0x1f1 to 0x202 + 0x6a = 0x26c.
        #expect(header.setupHeader.count == 0x26c - 0x1f1)
        #expect(header.setupHeader.last == 0x5a)
        // Relocatable: it decompresses at max(align(1 MiB, 2 MiB), pref_address) and needs init_size from there.
        #expect(header.footprintEnd(loadAddress: 0x10_0000) == 0x120_0000)
    }

    @Test func zeroSetupSectorsMeansFour() throws {
        var crafted = CraftedBzImage()
        crafted.setupSectors = 0
        let header = try parse(crafted.bytes)
        #expect(header.setupSectors == 4)
        #expect(header.setupSize == 2560)
        #expect(header.kernelSize == UInt64(crafted.payload.count))
    }

    @Test func nonRelocatableKernelRunsAtItsPreferredAddress() throws {
        var crafted = CraftedBzImage()
        crafted.relocatable = 0
        crafted.preferredAddress = 0x200_0000
        crafted.initSize = 0x10_0000
        #expect(try parse(crafted.bytes).footprintEnd(loadAddress: 0x10_0000) == 0x210_0000)
    }

    @Test func refusesEmptyAndRandomFiles() {
        #expect(throws: BootError.notAKernel(path: "/x")) { try parse([]) }
        #expect(throws: BootError.notAKernel(path: "/x")) { try parse(LoaderFixtures.pseudoRandomBytes(100, seed: 1)) }
        #expect(throws: BootError.notAKernel(path: "/x")) { try parse(LoaderFixtures.pseudoRandomBytes(100_000, seed: 2)) }
        #expect(BootError.notAKernel(path: "/x").description == """
            kernel "/x": not a bzImage or ELF vmlinux (no "HdrS" magic at 0x202 and no ELF magic); \
            pass a Linux bzImage or an ELF vmlinux with a PVH note
            """)
    }

    @Test func refusesTruncatedImages() {
        var crafted = CraftedBzImage()
        crafted.setupSectors = 11  // 6144 bytes of setup
        let full = crafted.bytes
        let cut = Array(full.prefix(600))
        let error = BootError.truncated(path: "/x", fileSize: 600, expected: 6144, source: "setup header")
        #expect(throws: error) { try parse(cut) }
        #expect(error.description.hasPrefix("kernel \"/x\": truncated (file is 600 bytes, setup header says 6144)"))
        // Exactly the setup area, no protected-mode code at all.
        #expect(throws: BootError.truncated(path: "/x", fileSize: 6144, expected: 6144, source: "setup header")) {
            try parse(Array(full.prefix(6144)))
        }
        // The setup is whole but syssize promises more code than the file has.
        crafted.systemParagraphs = UInt32(crafted.payload.count / 16 + 2)
        #expect(throws: BootError.truncated(path: "/x", fileSize: UInt64(6144 + crafted.payload.count),
                                            expected: UInt64(6144 + crafted.payload.count + 32), source: "setup header")) {
            try parse(crafted.bytes)
        }
        // Rounding up to a whole paragraph is fine.
        crafted.payload.removeLast(5)
        crafted.systemParagraphs = nil
        #expect(throws: Never.self) { try parse(crafted.bytes) }
    }

    @Test func refusesOldProtocols() {
        var crafted = CraftedBzImage()
        crafted.version = 0x020a
        let error = BootError.protocolTooOld(path: "/x", version: 0x020a)
        #expect(throws: error) { try parse(crafted.bytes) }
        #expect(error.description.hasPrefix("kernel \"/x\": boot protocol 2.10 is too old (need 2.12+ for the 64-bit entry)"))
        #expect(BootError.protocolTooOld(path: "/x", version: 0x0206).description.contains("protocol 2.06 is"))
        crafted.version = 0x020c
        #expect(throws: Never.self) { try parse(crafted.bytes) }
    }

    @Test func refusesKernelsWithout64BitEntry() {
        var crafted = CraftedBzImage()
        crafted.xloadFlags = 0x02
        #expect(throws: BootError.no64BitEntry(path: "/x")) { try parse(crafted.bytes) }
    }

    @Test func refusesInconsistentHeaders() {
        var crafted = CraftedBzImage()
        crafted.bootFlag = 0x1234
        #expect(throws: BootError.invalidBzImage(path: "/x", problem: .badBootFlag(0x1234))) { try parse(crafted.bytes) }
        crafted = CraftedBzImage()
        crafted.loadFlags = 0
        #expect(throws: BootError.invalidBzImage(path: "/x", problem: .notLoadedHigh)) { try parse(crafted.bytes) }
        crafted = CraftedBzImage()
        crafted.systemParagraphs = 0
        #expect(throws: BootError.invalidBzImage(path: "/x", problem: .emptyKernel)) { try parse(crafted.bytes) }
        crafted = CraftedBzImage()
        crafted.kernelAlignment = 0x30_0000
        #expect(throws: BootError.invalidBzImage(path: "/x", problem: .badKernelAlignment(0x30_0000))) {
            try parse(crafted.bytes)
        }
        var image = CraftedBzImage().bytes
        image.storeLittleEndian(UInt32(0xffff_ff00), at: 0x248)
        #expect(throws: BootError.invalidBzImage(path: "/x", problem: .payloadOutsideKernel(
            offset: 0xffff_ff00, length: 4096, kernelSize: 8192))) { try parse(image) }
    }

    @Test func mutatedHeadersNeverTrap() {
        let original = CraftedBzImage().bytes
        var generator = LoaderSeededGenerator(seed: 99)
        for _ in 0..<3000 {
            var image = original
            for _ in 0..<Int.random(in: 1...8, using: &generator) {
                image[Int.random(in: 0x1f0..<0x270, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
            }
            let cut = Bool.random(using: &generator) ? image.count : Int.random(in: 0...image.count, using: &generator)
            if let header = try? parse(Array(image.prefix(cut))) {
                _ = header.footprintEnd(loadAddress: X86Layout.kernelAddress)
                _ = try? ZeroPage.build(header: header, commandLineAddress: 0x2_0000, initrd: nil, e820: [], rsdpAddress: 0)
            }
        }
    }

    // MARK: Loading

    @Test func loadsKernelInitrdCommandLineAndZeroPage() throws {
        let memory = try LoaderFixtures.memory()
        let crafted = CraftedBzImage()
        let initrd = LoaderFixtures.pseudoRandomBytes(10_000, seed: 5)
        let e820 = LoaderFixtures.e820()
        let entry = try LoaderFixtures.load(kernel: crafted.bytes, initrd: initrd, commandLine: "console=ttyS0 quiet",
                                            memory: memory, rsdp: 0xe_0000, e820: e820)
        #expect(entry == .linux64(entry: 0x10_0200, bootParams: 0x7000))

        // The protected-mode code at 1 MiB.
        #expect(try memory.read(count: crafted.payload.count, at: GuestAddress(0x10_0000)) == crafted.payload)
        // The command line, NUL-terminated.
        #expect(try memory.read(count: 20, at: GuestAddress(0x2_0000)) == Array("console=ttyS0 quiet".utf8) + [0])
        // The initrd: as high as possible below 64 MiB, page-aligned.
        let initrdAddress: UInt64 = (64 << 20) - 0x3000
        #expect(try memory.read(count: initrd.count, at: GuestAddress(initrdAddress)) == initrd)

        let page = try memory.read(count: 4096, at: GuestAddress(0x7000))
        #expect(page.loadLittleEndian(UInt64.self, at: 0x070) == 0xe_0000)  // acpi_rsdp_addr
        #expect(page[0x1e8] == 3)  // e820_entries
        for (index, e) in e820.enumerated() {
            let base = 0x2d0 + 20 * index
            #expect(page.loadLittleEndian(UInt64.self, at: base) == e.address)
            #expect(page.loadLittleEndian(UInt64.self, at: base + 8) == e.size)
            #expect(page.loadLittleEndian(UInt32.self, at: base + 16) == e.kind.rawValue)
        }
        #expect(page[0x2d0 + 60] == 0)  // nothing past the last entry
        #expect(page.loadLittleEndian(UInt16.self, at: 0x1fa) == 0xffff)  // vid_mode
        #expect(page.loadLittleEndian(UInt16.self, at: 0x1fe) == 0xaa55)  // boot_flag, copied
        #expect(Array(page[0x202..<0x206]) == Array("HdrS".utf8))
        #expect(page.loadLittleEndian(UInt16.self, at: 0x206) == 0x020f)
        #expect(page[0x210] == 0xff)  // type_of_loader
        #expect(page[0x211] == 0x81)  // LOADED_HIGH | CAN_USE_HEAP
        #expect(page.loadLittleEndian(UInt32.self, at: 0x218) == UInt32(initrdAddress))  // ramdisk_image
        #expect(page.loadLittleEndian(UInt32.self, at: 0x21c) == 10_000)  // ramdisk_size
        #expect(page.loadLittleEndian(UInt16.self, at: 0x224) == 0xfe00)  // heap_end_ptr
        #expect(page.loadLittleEndian(UInt32.self, at: 0x228) == 0x2_0000)  // cmd_line_ptr
        #expect(page.loadLittleEndian(UInt32.self, at: 0x0c0) == 0)  // ext_ramdisk_image
        #expect(page.loadLittleEndian(UInt32.self, at: 0x0c8) == 0)  // ext_cmd_line_ptr
        #expect(page[0x26b] == 0x5a)  // last byte of the header, copied
        #expect(page[0x26c] == 0)  // first byte after it, not copied
        #expect(page[0x000..<0x070].allSatisfy { $0 == 0 })
    }

    @Test func loadsWithoutInitrd() throws {
        let memory = try LoaderFixtures.memory()
        try LoaderFixtures.load(kernel: CraftedBzImage().bytes, commandLine: "", memory: memory)
        let page = try memory.read(count: 4096, at: GuestAddress(0x7000))
        #expect(page.loadLittleEndian(UInt32.self, at: 0x218) == 0)
        #expect(page.loadLittleEndian(UInt32.self, at: 0x21c) == 0)
        #expect(page.loadLittleEndian(UInt32.self, at: 0x228) == 0x2_0000)
        #expect(try memory.load(UInt8.self, at: GuestAddress(0x2_0000)) == 0)
    }

    @Test func scratchBytesDoNotSurviveASmallKernel() throws {
        let memory = try LoaderFixtures.memory()
        var crafted = CraftedBzImage()
        crafted.payload = [UInt8](repeating: 0x90, count: 512)
        try LoaderFixtures.load(kernel: crafted.bytes, memory: memory)
        #expect(try memory.read(count: 512, at: GuestAddress(0x10_0000)) == crafted.payload)
        // The loader read the file's first 1.5 KiB through 1 MiB; what the payload did not overwrite is zero again.
        #expect(try memory.read(count: 1024, at: GuestAddress(0x10_0200)).allSatisfy { $0 == 0 })
    }

    @Test func initrdRespectsInitrdAddrMax() throws {
        let memory = try LoaderFixtures.memory()
        var crafted = CraftedBzImage()
        crafted.initrdAddressMax = 0x1ff_ffff
        try LoaderFixtures.load(kernel: crafted.bytes, initrd: [UInt8](repeating: 7, count: 10_000), memory: memory)
        let page = try memory.read(count: 4096, at: GuestAddress(0x7000))
        #expect(page.loadLittleEndian(UInt32.self, at: 0x218) == 0x200_0000 - 0x3000)
        #expect(try memory.read(count: 4, at: GuestAddress(0x200_0000 - 0x3000)) == [7, 7, 7, 7])
    }

    @Test func refusesInitrdThatDoesNotFit() throws {
        let memory = try LoaderFixtures.memory()
        var crafted = CraftedBzImage()
        crafted.initrdAddressMax = 0xff_ffff  // below the kernel's end at 18 MiB
        let initrd = [UInt8](repeating: 1, count: 10_000)
        let error = LoaderFixtures.bootError { try LoaderFixtures.load(kernel: crafted.bytes, initrd: initrd, memory: memory) }
        guard case let .initrdDoesNotFit(path, size, floor, ceiling, fromAddrMax) = error else {
            Issue.record("unexpected \(String(describing: error))")
            return
        }
        #expect(size == 10_000 && floor == 0x120_0000 && ceiling == 0x100_0000 && fromAddrMax)
        #expect(error?.description == """
            initrd "\(path)" (9.8 KiB) does not fit below 0x1000000 (initrd_addr_max) above the kernel's end at \
            0x1200000; give the guest more memory
            """)

        // Limited by the end of RAM instead: 16 KiB between the kernel's end and the end of low RAM.
        let lowRAMEnd: UInt64 = 0x120_4000
        let second = LoaderFixtures.bootError {
            try LoaderFixtures.load(kernel: CraftedBzImage().bytes, initrd: [UInt8](repeating: 1, count: 0x5000),
                                    memory: memory, lowRAMEnd: lowRAMEnd)
        }
        guard case let .initrdDoesNotFit(_, _, _, secondCeiling, secondFromAddrMax) = second else {
            Issue.record("unexpected \(String(describing: second))")
            return
        }
        #expect(secondCeiling == lowRAMEnd && !secondFromAddrMax)
        // 16 KiB does fit.
        #expect(throws: Never.self) {
            try LoaderFixtures.load(kernel: CraftedBzImage().bytes, initrd: [UInt8](repeating: 1, count: 0x4000),
                                    memory: memory, lowRAMEnd: lowRAMEnd)
        }
    }

    @Test func refusesEmptyOrMissingInitrd() throws {
        let memory = try LoaderFixtures.memory()
        let error = LoaderFixtures.bootError { try LoaderFixtures.load(kernel: CraftedBzImage().bytes, initrd: [], memory: memory) }
        guard case .emptyFile(.initrd, _) = error else { Issue.record("unexpected \(String(describing: error))"); return }
        let missing = LoaderFixtures.bootError {
            try LoaderFixtures.withTemporaryFile(CraftedBzImage().bytes) { kernel in
                _ = try KernelLoader.load(kernelPath: kernel, initrdPath: "/nonexistent/initrd", commandLine: "",
                                          memory: memory, e820: [], rsdpAddress: 0, lowRAMEnd: 64 << 20)
            }
        }
        #expect(missing == .openFailed(.initrd, path: "/nonexistent/initrd", .noSuchFileOrDirectory))
    }

    @Test func refusesMissingOrUnreadableKernel() throws {
        let memory = try LoaderFixtures.memory()
        #expect(throws: BootError.openFailed(.kernel, path: "/nonexistent/vmlinuz", .noSuchFileOrDirectory)) {
            try KernelLoader.load(kernelPath: "/nonexistent/vmlinuz", initrdPath: nil, commandLine: "", memory: memory,
                                  e820: [], rsdpAddress: 0, lowRAMEnd: 64 << 20)
        }
        // A directory, a FIFO (whose open would block until a writer came) and a /proc file
        // (size 0, unseekable) are refused at once with what they are.
        let directory = LoaderFixtures.bootError {
            _ = try KernelLoader.load(kernelPath: "/tmp", initrdPath: nil, commandLine: "", memory: memory,
                                      e820: [], rsdpAddress: 0, lowRAMEnd: 64 << 20)
        }
        #expect(directory == .notARegularFile(.kernel, path: "/tmp", kind: .directory))
        #expect(directory?.description == "kernel \"/tmp\" is a directory, not a regular file; pass the kernel file itself")
        let fifo = FileManager.default.temporaryDirectory.appendingPathComponent("swiftlet-fifo-\(getpid())").path
        #expect(mkfifo(fifo, 0o600) == 0)
        defer { unlink(fifo) }
        let initrdFIFO = LoaderFixtures.bootError {
            try LoaderFixtures.withTemporaryFile(CraftedBzImage().bytes) { kernel in
                _ = try KernelLoader.load(kernelPath: kernel, initrdPath: fifo, commandLine: "", memory: memory,
                                          e820: [], rsdpAddress: 0, lowRAMEnd: 64 << 20)
            }
        }
        #expect(initrdFIFO == .notARegularFile(.initrd, path: fifo, kind: .fifo))
        #expect(initrdFIFO?.description.contains("is a FIFO, not a regular file") == true)
        let proc = LoaderFixtures.bootError {
            _ = try KernelLoader.load(kernelPath: "/proc/version", initrdPath: nil, commandLine: "", memory: memory,
                                      e820: [], rsdpAddress: 0, lowRAMEnd: 64 << 20)
        }
        #expect(proc == .emptyFile(.kernel, path: "/proc/version"))
        #expect(proc?.description == "kernel \"/proc/version\" is empty (0 bytes); pass a Linux bzImage or an ELF vmlinux")
        let device = LoaderFixtures.bootError {
            _ = try KernelLoader.load(kernelPath: "/dev/zero", initrdPath: nil, commandLine: "", memory: memory,
                                      e820: [], rsdpAddress: 0, lowRAMEnd: 64 << 20)
        }
        #expect(device == .notARegularFile(.kernel, path: "/dev/zero", kind: .characterDevice))
        let error = LoaderFixtures.bootError { try LoaderFixtures.load(kernel: [], memory: memory) }
        guard case .emptyFile(.kernel, _) = error else { Issue.record("unexpected \(String(describing: error))"); return }
    }

    @Test func refusesTooLongCommandLines() throws {
        let memory = try LoaderFixtures.memory()
        var crafted = CraftedBzImage()
        crafted.commandLineSize = 16
        let error = LoaderFixtures.bootError {
            try LoaderFixtures.load(kernel: crafted.bytes, commandLine: String(repeating: "a", count: 17), memory: memory)
        }
        #expect(error == .commandLineTooLong(length: 17, maximum: 16))
        #expect(error?.description == "command line is 17 bytes; the kernel accepts at most 16")
        #expect(throws: Never.self) {
            try LoaderFixtures.load(kernel: crafted.bytes, commandLine: String(repeating: "a", count: 16), memory: memory)
        }
        #expect(throws: BootError.commandLineContainsNUL) {
            try LoaderFixtures.load(kernel: crafted.bytes, commandLine: "a\u{0}b", memory: memory)
        }
    }

    @Test func refusesKernelThatDoesNotFit() throws {
        let memory = try LoaderFixtures.memory()
        let error = LoaderFixtures.bootError {
            try LoaderFixtures.load(kernel: CraftedBzImage().bytes, memory: memory, lowRAMEnd: 0x110_0000)
        }
        guard case let .kernelDoesNotFit(_, end, ramEnd) = error else {
            Issue.record("unexpected \(String(describing: error))")
            return
        }
        #expect(end == 0x120_0000 && ramEnd == 0x110_0000)
        // init_size far beyond the guest's 64 MiB.
        var huge = CraftedBzImage()
        huge.initSize = 0x8000_0000
        let second = LoaderFixtures.bootError {
            try LoaderFixtures.load(kernel: huge.bytes, memory: memory, lowRAMEnd: 0xc000_0000)
        }
        guard case .kernelDoesNotFit = second else { Issue.record("unexpected \(String(describing: second))"); return }
    }

    @Test func refusesTooManyMemoryMapEntries() throws {
        let memory = try LoaderFixtures.memory()
        let e820 = (0..<129).map { E820Entry(address: UInt64($0) << 12, size: 4096, kind: .ram) }
        #expect(throws: BootError.tooManyMemoryMapEntries(count: 129, maximum: 128)) {
            try LoaderFixtures.load(kernel: CraftedBzImage().bytes, memory: memory, e820: e820)
        }
    }
}
