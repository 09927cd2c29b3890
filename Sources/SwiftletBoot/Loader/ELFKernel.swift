import SwiftletCore

/// A validated ELF64 x86-64 kernel (an uncompressed `vmlinux`) with a PVH entry point.
///
/// Swiftlet starts such a kernel with Xen's PVH boot ABI: its `PT_LOAD` segments are copied to
/// their physical addresses (`p_paddr`) and it is entered in 32-bit protected mode at the address
/// in its `XEN_ELFNOTE_PHYS32_ENTRY` note, with EBX pointing at an `hvm_start_info`.
///
/// Every offset and size taken from the file goes through overflow-checked arithmetic and is
/// checked against the file size, so a hostile image yields a ``BootError`` and never traps.
public struct ELFKernel: Equatable, Sendable {
    /// One non-empty `PT_LOAD` segment.
    public struct Segment: Equatable, Sendable {
        /// The segment's index in the program header table.
        public let index: Int
        /// Where its bytes start in the file (`p_offset`).
        public let fileOffset: UInt64
        /// How many bytes come from the file (`p_filesz`); never more than ``memorySize``.
        public let fileSize: UInt64
        /// The guest-physical load address (`p_paddr`).
        public let physicalAddress: UInt64
        /// The size in memory (`p_memsz`); the part past ``fileSize`` is zeroed.
        public let memorySize: UInt64
        /// The first address after the segment (``ELFKernel/parse(fileSize:path:read:)`` checked that it does not overflow).
        public var end: UInt64 { physicalAddress + memorySize }

        init(index: Int, fileOffset: UInt64, fileSize: UInt64, physicalAddress: UInt64, memorySize: UInt64) {
            self.index = index
            self.fileOffset = fileOffset
            self.fileSize = fileSize
            self.physicalAddress = physicalAddress
            self.memorySize = memorySize
        }
    }

    /// `EM_X86_64`.
    public static let machineX86_64: UInt16 = 62
    /// The note type of the PVH 32-bit physical entry point (`XEN_ELFNOTE_PHYS32_ENTRY`).
    public static let pvhEntryNoteType: UInt32 = 18
    /// The most program headers Swiftlet reads (a vmlinux has about five).
    public static let maxProgramHeaders = 256
    /// The largest program header entry accepted (`e_phentsize`; 56 in practice).
    public static let maxProgramHeaderSize: UInt16 = 1024
    /// How much of each `PT_NOTE` segment is scanned for the PVH note.
    public static let maxNoteBytes = 64 << 10

    /// The file the kernel came from (for messages).
    public let path: String
    /// The size of the whole file in bytes.
    public let fileSize: UInt64
    /// The non-empty `PT_LOAD` segments, in program header order.
    public let segments: [Segment]
    /// The 32-bit physical PVH entry point.
    public let pvhEntry: UInt64

    /// The first address after the highest loaded segment.
    public var end: UInt64 { segments.map(\.end).max() ?? 0 }

    /// Whether `bytes` start with the ELF magic `\x7fELF`.
    public static func hasMagic(_ bytes: [UInt8]) -> Bool {
        bytes.count >= 4 && bytes[0] == 0x7f && bytes[1] == 0x45 && bytes[2] == 0x4c && bytes[3] == 0x46
    }

    /// Parses and validates an ELF kernel held entirely in memory (convenient for small images and tests).
    public static func parse(_ image: [UInt8], path: String) throws(BootError) -> ELFKernel {
        try parse(fileSize: UInt64(image.count), path: path) { (offset: UInt64, count: Int) throws(BootError) -> [UInt8] in
            guard offset <= UInt64(image.count), UInt64(count) <= UInt64(image.count) - offset else {
                throw .truncated(path: path, fileSize: UInt64(image.count), expected: offset &+ UInt64(count),
                                 source: "ELF header")
            }
            return Array(image[Int(offset)..<Int(offset) + count])
        }
    }

    /// Parses and validates an ELF kernel, reading the parts it needs through `read`.
    ///
    /// `read(offset, count)` returns `count` bytes of the file at `offset`; it is only called for
    /// ranges inside `fileSize`, and reads at most the ELF header, the program header table and
    /// the first ``maxNoteBytes`` of each `PT_NOTE` segment.
    ///
    /// - Throws: ``BootError/notAKernel(path:)`` without the ELF magic, ``BootError/truncated(path:fileSize:expected:source:)``
    ///   for a file shorter than the ELF header, ``BootError/invalidELF(path:problem:)``,
    ///   ``BootError/noPVHNote(path:)``, or whatever `read` throws.
    public static func parse(fileSize: UInt64, path: String,
                             read: (_ offset: UInt64, _ count: Int) throws(BootError) -> [UInt8]) throws(BootError) -> ELFKernel {
        let header = try read(0, Int(min(fileSize, 64)))
        guard hasMagic(header) else { throw .notAKernel(path: path) }
        guard header.count == 64 else {
            throw .truncated(path: path, fileSize: fileSize, expected: 64, source: "the ELF header")
        }
        func fail(_ problem: BootError.ELFProblem) -> BootError { .invalidELF(path: path, problem: problem) }
        guard header[4] == 2 else { throw fail(.not64Bit(header[4])) }
        guard header[5] == 1 else { throw fail(.notLittleEndian(header[5])) }
        let type = header.loadLittleEndian(UInt16.self, at: 16)
        guard type == 2 else { throw fail(.notExecutable(type)) }
        let machine = header.loadLittleEndian(UInt16.self, at: 18)
        guard machine == machineX86_64 else { throw fail(.wrongMachine(machine)) }

        let tableOffset = header.loadLittleEndian(UInt64.self, at: 32)
        let entrySize = header.loadLittleEndian(UInt16.self, at: 54)
        let entryCount = Int(header.loadLittleEndian(UInt16.self, at: 56))
        guard entrySize >= 56, entrySize <= maxProgramHeaderSize else { throw fail(.badProgramHeaderSize(entrySize)) }
        guard entryCount > 0 else { throw fail(.noProgramHeaders) }
        guard entryCount <= maxProgramHeaders else {
            throw fail(.tooManyProgramHeaders(count: entryCount, maximum: maxProgramHeaders))
        }
        let tableSize = UInt64(entryCount) * UInt64(entrySize)  // at most 256 KiB
        guard let tableEnd = loaderAdd(tableOffset, tableSize), tableEnd <= fileSize else {
            throw fail(.programHeadersOutsideFile(offset: tableOffset, size: tableSize))
        }
        let table = try read(tableOffset, Int(tableSize))

        var segments: [Segment] = []
        var pvhEntry: UInt64?
        for index in 0..<entryCount {
            let base = index * Int(entrySize)
            let type = table.loadLittleEndian(UInt32.self, at: base)
            let offset = table.loadLittleEndian(UInt64.self, at: base + 8)
            let address = table.loadLittleEndian(UInt64.self, at: base + 24)
            let fileBytes = table.loadLittleEndian(UInt64.self, at: base + 32)
            let memoryBytes = table.loadLittleEndian(UInt64.self, at: base + 40)
            let alignment = table.loadLittleEndian(UInt64.self, at: base + 48)
            let insideFile = loaderAdd(offset, fileBytes).map { $0 <= fileSize } ?? false
            switch type {
            case 1:  // PT_LOAD
                guard fileBytes <= memoryBytes else {
                    throw fail(.segmentFileSizeExceedsMemorySize(index: index, fileSize: fileBytes, memorySize: memoryBytes))
                }
                guard insideFile else { throw fail(.segmentOutsideFile(index: index, offset: offset, size: fileBytes)) }
                guard loaderAdd(address, memoryBytes) != nil else {
                    throw fail(.segmentAddressOverflow(index: index, address: address, size: memoryBytes))
                }
                if memoryBytes > 0 {
                    segments.append(Segment(index: index, fileOffset: offset, fileSize: fileBytes,
                                            physicalAddress: address, memorySize: memoryBytes))
                }
            case 4:  // PT_NOTE
                guard insideFile else { throw fail(.segmentOutsideFile(index: index, offset: offset, size: fileBytes)) }
                guard pvhEntry == nil, fileBytes > 0 else { continue }
                let notes = try read(offset, Int(min(fileBytes, UInt64(maxNoteBytes))))
                pvhEntry = try findPVHEntry(in: notes, alignment: alignment == 8 ? 8 : 4, path: path)
            default:
                continue
            }
        }
        guard !segments.isEmpty else { throw fail(.noLoadableSegments) }
        guard let entry = pvhEntry else { throw .noPVHNote(path: path) }
        guard segments.contains(where: { $0.physicalAddress <= entry && entry < $0.end }) else {
            throw fail(.entryOutsideSegments(entry))
        }
        return ELFKernel(path: path, fileSize: fileSize, segments: segments, pvhEntry: entry)
    }

    /// Scans a note segment for a `"Xen"` note of type 18 and returns its entry point (the low 32 bits
    /// of a 4- or 8-byte descriptor). Stops quietly at a malformed note.
    static func findPVHEntry(in notes: [UInt8], alignment: Int, path: String) throws(BootError) -> UInt64? {
        var position = 0
        // All arithmetic below stays far from Int overflow: each field is at most 2^32 and the
        // position never exceeds notes.count.
        while notes.count - position >= 12 {
            let nameSize = Int(notes.loadLittleEndian(UInt32.self, at: position))
            let descriptorSize = notes.loadLittleEndian(UInt32.self, at: position + 4)
            let type = notes.loadLittleEndian(UInt32.self, at: position + 8)
            let nameStart = position + 12
            let descriptorStart = roundUp(nameStart + nameSize, alignment)
            let descriptorEnd = descriptorStart + Int(descriptorSize)
            guard descriptorEnd <= notes.count else { return nil }
            let name = notes[nameStart..<nameStart + nameSize]
            let isXen = name.elementsEqual("Xen\0".utf8) || name.elementsEqual("Xen".utf8)
            if isXen, type == pvhEntryNoteType {
                guard descriptorSize == 4 || descriptorSize == 8 else {
                    throw .invalidELF(path: path, problem: .badPVHNote(descriptorSize: descriptorSize))
                }
                return UInt64(notes.loadLittleEndian(UInt32.self, at: descriptorStart))
            }
            position = roundUp(descriptorEnd, alignment)
        }
        return nil
    }

    private static func roundUp(_ value: Int, _ alignment: Int) -> Int { (value + alignment - 1) & ~(alignment - 1) }
}
