import SwiftletCore
#if canImport(Glibc)
import Glibc
#endif
import SwiftletArch
import SwiftletBoot
import SwiftletMemory
import SystemPackage
import Testing

/// Helpers shared by the loader tests: crafted images, temporary files and small guests.
enum LoaderFixtures {
    static let mib: UInt64 = 1 << 20

    /// A fresh guest with `size` bytes of RAM at address 0.
    static func memory(size: UInt64 = 64 << 20) throws -> GuestMemory {
        try GuestMemory(ranges: [GuestRange(start: GuestAddress(0), size: size)!])
    }

    /// A plausible memory map for a guest whose low RAM ends at `lowRAMEnd`.
    static func e820(lowRAMEnd: UInt64 = 64 << 20) -> [E820Entry] {
        [
            E820Entry(address: 0, size: X86Layout.lowMemoryEnd, kind: .ram),
            E820Entry(address: X86Layout.lowMemoryEnd, size: X86Layout.kernelAddress - X86Layout.lowMemoryEnd, kind: .reserved),
            E820Entry(address: X86Layout.kernelAddress, size: lowRAMEnd - X86Layout.kernelAddress, kind: .ram),
        ]
    }

    /// Deterministic pseudo-random bytes (xorshift64), so failures reproduce.
    static func pseudoRandomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
        var generator = LoaderSeededGenerator(seed: seed)
        return (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
    }

    /// Writes `bytes` to a fresh temporary file, runs `body` with its path, then removes the file.
    static func withTemporaryFile<R>(_ bytes: [UInt8], _ body: (String) throws -> R) throws -> R {
        let path = "/tmp/swiftlet-loader-test-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        let descriptor = try FileDescriptor.open(FilePath(path), .writeOnly, options: [.create, .exclusiveCreate],
                                                 permissions: .ownerReadWrite)
        defer { unlink(path) }
        do {
            _ = try descriptor.writeAll(bytes)
            try descriptor.close()
        } catch {
            try? descriptor.close()
            throw error
        }
        return try body(path)
    }

    /// Reads up to `count` leading bytes of a file (through a small guest, to avoid raw pointers).
    static func readPrefix(of path: String, count: Int) throws -> [UInt8] {
        let descriptor = try FileDescriptor.open(FilePath(path), .readOnly)
        defer { try? descriptor.close() }
        let size = UInt64(try descriptor.seek(offset: 0, from: .end))
        let wanted = Int(min(size, UInt64(count)))
        let scratch = try memory(size: UInt64((wanted + 4095) & ~4095) + 4096)
        try scratch.read(from: descriptor, fileOffset: 0, count: UInt64(wanted), into: GuestAddress(0))
        return try scratch.read(count: wanted, at: GuestAddress(0))
    }

    /// Runs `body` and returns the ``BootError`` it throws, recording an issue when it does not throw one.
    static func bootError(sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) -> BootError? {
        do {
            try body()
            Issue.record("expected a BootError, got success", sourceLocation: sourceLocation)
        } catch let error as BootError {
            return error
        } catch {
            Issue.record("expected a BootError, got \(error)", sourceLocation: sourceLocation)
        }
        return nil
    }

    /// Loads `kernel` (and `initrd`) from temporary files into `memory`.
    @discardableResult
    static func load(kernel: [UInt8], initrd: [UInt8]? = nil, commandLine: String = "console=ttyS0",
                     memory: GuestMemory, lowRAMEnd: UInt64 = 64 << 20, rsdp: UInt64 = 0xe0000,
                     e820: [E820Entry]? = nil) throws -> BootEntry {
        try withTemporaryFile(kernel) { kernelPath in
            if let initrd {
                return try withTemporaryFile(initrd) { initrdPath in
                    try KernelLoader.load(kernelPath: kernelPath, initrdPath: initrdPath, commandLine: commandLine,
                                          memory: memory, e820: e820 ?? Self.e820(lowRAMEnd: lowRAMEnd),
                                          rsdpAddress: rsdp, lowRAMEnd: lowRAMEnd)
                }
            }
            return try KernelLoader.load(kernelPath: kernelPath, initrdPath: nil, commandLine: commandLine,
                                         memory: memory, e820: e820 ?? Self.e820(lowRAMEnd: lowRAMEnd),
                                         rsdpAddress: rsdp, lowRAMEnd: lowRAMEnd)
        }
    }
}

/// xorshift64: a tiny deterministic generator for reproducible "random" inputs.
struct LoaderSeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed == 0 ? 0x9e37_79b9_7f4a_7c15 : seed }
    mutating func next() -> UInt64 {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return state
    }
}

/// A crafted bzImage: a setup area with a setup header and a recognisable payload.
struct CraftedBzImage {
    var setupSectors: UInt8 = 1
    var bootFlag: UInt16 = 0xaa55
    var version: UInt16 = 0x020f
    var loadFlags: UInt8 = 0x01
    var xloadFlags: UInt16 = 0x03
    var relocatable: UInt8 = 1
    var kernelAlignment: UInt32 = 0x20_0000
    var initrdAddressMax: UInt32 = 0x7fff_ffff
    var commandLineSize: UInt32 = 2047
    var preferredAddress: UInt64 = 0x100_0000
    var initSize: UInt32 = 0x20_0000
    var payload: [UInt8] = LoaderFixtures.pseudoRandomBytes(8192, seed: 42)
    /// Overrides `syssize` (by default the payload size in paragraphs).
    var systemParagraphs: UInt32?

    /// The size of the setup area in the file.
    var setupSize: Int { (Int(setupSectors == 0 ? 4 : setupSectors) + 1) * 512 }

    var bytes: [UInt8] {
        var image = [UInt8](repeating: 0, count: setupSize)
        image[0x1f1] = setupSectors
        image.storeLittleEndian(systemParagraphs ?? UInt32((payload.count + 15) / 16), at: 0x1f4)
        image.storeLittleEndian(bootFlag, at: 0x1fe)
        image[0x200] = 0xeb
        image[0x201] = 0x6a  // jump over the header: it ends at 0x26c
        image.replaceSubrange(0x202..<0x206, with: Array("HdrS".utf8))
        image.storeLittleEndian(version, at: 0x206)
        image[0x211] = loadFlags
        image.storeLittleEndian(UInt32(0x10_0000), at: 0x214)  // code32_start
        image.storeLittleEndian(initrdAddressMax, at: 0x22c)
        image.storeLittleEndian(kernelAlignment, at: 0x230)
        image[0x234] = relocatable
        image.storeLittleEndian(xloadFlags, at: 0x236)
        image.storeLittleEndian(commandLineSize, at: 0x238)
        image.storeLittleEndian(UInt32(0x100), at: 0x248)  // payload_offset
        image.storeLittleEndian(UInt32(payload.count / 2), at: 0x24c)  // payload_length
        image.storeLittleEndian(preferredAddress, at: 0x258)
        image.storeLittleEndian(initSize, at: 0x260)
        image[0x26b] = 0x5a  // last header byte, to check the copy length
        image[0x26c] = 0xee  // first byte after the header: must not be copied
        return image + payload
    }
}

/// A crafted ELF64 vmlinux: program headers for `segments` and one `PT_NOTE` with the notes.
struct CraftedELF {
    struct Segment {
        var address: UInt64
        var data: [UInt8]
        var memorySize: UInt64
    }

    var elfClass: UInt8 = 2
    var dataEncoding: UInt8 = 1
    var type: UInt16 = 2
    var machine: UInt16 = 62
    var segments: [Segment] = [
        Segment(address: 0x100_0000, data: LoaderFixtures.pseudoRandomBytes(6000, seed: 7), memorySize: 0x4000),
        Segment(address: 0x120_0000, data: LoaderFixtures.pseudoRandomBytes(300, seed: 8), memorySize: 300),
    ]
    /// The PVH entry (nil: no PVH note, only a GNU note).
    var pvhEntry: UInt64? = 0x100_0040
    /// The PVH note's descriptor size (4 or 8).
    var pvhDescriptorSize: Int = 4
    /// Put a GNU build-id note before the Xen note.
    var leadingGNUNote = true
    /// The note segment's `p_align` (4 or 8), which also sets the note padding.
    var noteAlignment = 4

    /// The file offset of program header `index`.
    static func programHeaderOffset(_ index: Int) -> Int { 64 + index * 56 }

    var notes: [UInt8] {
        var notes: [UInt8] = []
        func pad() { while notes.count % noteAlignment != 0 { notes.append(0) } }
        func note(name: String, type: UInt32, descriptor: [UInt8]) {
            let nameBytes = Array(name.utf8) + [0]
            var header = [UInt8](repeating: 0, count: 12)
            header.storeLittleEndian(UInt32(nameBytes.count), at: 0)
            header.storeLittleEndian(UInt32(descriptor.count), at: 4)
            header.storeLittleEndian(type, at: 8)
            notes += header + nameBytes
            pad()
            notes += descriptor
            pad()
        }
        if leadingGNUNote { note(name: "GNU", type: 3, descriptor: [UInt8](repeating: 0xab, count: 20)) }
        if let pvhEntry {
            var descriptor = [UInt8](repeating: 0, count: pvhDescriptorSize)
            for index in 0..<min(pvhDescriptorSize, 8) { descriptor[index] = UInt8(truncatingIfNeeded: pvhEntry >> (8 * index)) }
            note(name: "Xen", type: 18, descriptor: descriptor)
        }
        note(name: "Linux", type: 1, descriptor: [1, 2, 3, 4])
        return notes
    }

    var bytes: [UInt8] {
        let headerCount = segments.count + 1
        var image = [UInt8](repeating: 0, count: 64 + headerCount * 56)
        image.replaceSubrange(0..<4, with: [0x7f, 0x45, 0x4c, 0x46])
        image[4] = elfClass
        image[5] = dataEncoding
        image[6] = 1
        image.storeLittleEndian(type, at: 16)
        image.storeLittleEndian(machine, at: 18)
        image.storeLittleEndian(UInt32(1), at: 20)
        image.storeLittleEndian(UInt64(0xffff_ffff_8100_0000), at: 24)  // e_entry (virtual; unused for PVH)
        image.storeLittleEndian(UInt64(64), at: 32)  // e_phoff
        image.storeLittleEndian(UInt16(64), at: 52)
        image.storeLittleEndian(UInt16(56), at: 54)
        image.storeLittleEndian(UInt16(headerCount), at: 56)
        for (index, segment) in segments.enumerated() {
            while image.count % 16 != 0 { image.append(0) }
            let offset = image.count
            image += segment.data
            let base = Self.programHeaderOffset(index)
            image.storeLittleEndian(UInt32(1), at: base)
            image.storeLittleEndian(UInt32(7), at: base + 4)
            image.storeLittleEndian(UInt64(offset), at: base + 8)
            image.storeLittleEndian(segment.address | 0xffff_ffff_0000_0000, at: base + 16)
            image.storeLittleEndian(segment.address, at: base + 24)
            image.storeLittleEndian(UInt64(segment.data.count), at: base + 32)
            image.storeLittleEndian(segment.memorySize, at: base + 40)
            image.storeLittleEndian(UInt64(0x1000), at: base + 48)
        }
        while image.count % 8 != 0 { image.append(0) }
        let noteOffset = image.count
        let noteBytes = notes
        image += noteBytes
        let base = Self.programHeaderOffset(segments.count)
        image.storeLittleEndian(UInt32(4), at: base)
        image.storeLittleEndian(UInt64(noteOffset), at: base + 8)
        image.storeLittleEndian(UInt64(noteBytes.count), at: base + 32)
        image.storeLittleEndian(UInt64(noteBytes.count), at: base + 40)
        image.storeLittleEndian(UInt64(noteAlignment), at: base + 48)
        return image
    }
}
