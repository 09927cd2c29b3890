import SwiftletArch
import SwiftletMemory
import SystemPackage

/// How to start the vCPU after ``KernelLoader/load(kernelPath:initrdPath:commandLine:memory:e820:rsdpAddress:lowRAMEnd:)``.
public enum BootEntry: Equatable, Sendable {
    /// 64-bit boot protocol: start in long mode at `entry` with RSI = `bootParams`.
    case linux64(entry: UInt64, bootParams: UInt64)
    /// PVH: start in 32-bit protected mode (paging off) at `entry` with EBX = `startInfo`.
    case pvh(entry: UInt64, startInfo: UInt64)
}

/// Loads a Linux kernel (bzImage or ELF vmlinux with a PVH note), an optional initrd and the
/// command line into guest RAM, and writes the boot information.
///
/// Guest-physical placement (see ``X86Layout``):
/// - bzImage: the protected-mode code at ``X86Layout/kernelAddress`` (1 MiB), entered at `+0x200`;
///   the zero page at ``X86Layout/bootParamsAddress``.
/// - ELF: each `PT_LOAD` segment at its `p_paddr` (which must lie in `[1 MiB, lowRAMEnd)`);
///   `hvm_start_info`, its module list and memory map at ``X86Layout/bootParamsAddress``.
/// - The command line, NUL-terminated, at ``X86Layout/commandLineAddress``.
/// - The initrd page-aligned as high as possible below `lowRAMEnd` (and, for a bzImage, below
///   `initrd_addr_max`), above the memory the kernel uses while booting.
public enum KernelLoader {
    /// The longest command line passed to a PVH kernel, without the NUL (x86 `COMMAND_LINE_SIZE` - 1).
    public static let pvhCommandLineLimit = 2047

    /// Loads the kernel, the initrd and the command line and writes the boot information.
    ///
    /// - Parameters:
    ///   - kernelPath: a bzImage (64-bit boot protocol 2.12+) or an ELF64 x86-64 vmlinux with a
    ///     `XEN_ELFNOTE_PHYS32_ENTRY` note; told apart by their magic numbers.
    ///   - initrdPath: an initrd / initramfs to load, or `nil`.
    ///   - commandLine: the kernel command line.
    ///   - memory: guest RAM; it must cover address 0 up to `lowRAMEnd`.
    ///   - e820: the memory map to hand the kernel (at most 128 entries).
    ///   - rsdpAddress: the ACPI RSDP's guest-physical address, or 0 for none.
    ///   - lowRAMEnd: the first address after the RAM that starts at 0 (at most the MMIO hole's start).
    /// - Returns: how to enter the kernel.
    /// - Throws: a ``BootError`` saying what is wrong and what to do.
    public static func load(kernelPath: String, initrdPath: String?, commandLine: String, memory: GuestMemory,
                            e820: [E820Entry], rsdpAddress: UInt64, lowRAMEnd: UInt64) throws(BootError) -> BootEntry {
        let commandLineBytes = Array(commandLine.utf8)
        guard !commandLineBytes.contains(0) else { throw .commandLineContainsNUL }
        guard e820.count <= ZeroPage.maxE820Entries else {
            throw .tooManyMemoryMapEntries(count: e820.count, maximum: ZeroPage.maxE820Entries)
        }
        let kernel = try BootFile.open(kernelPath, role: .kernel)
        defer { kernel.close() }

        let head = try kernel.bytes(at: 0, count: Int(min(kernel.size, UInt64(BzImageHeader.bytesNeeded))))
        if ELFKernel.hasMagic(head) {
            let elf = try ELFKernel.parse(fileSize: kernel.size, path: kernelPath, read: kernel.bytes)
            return try loadPVH(elf, file: kernel, initrdPath: initrdPath, commandLine: commandLineBytes,
                               memory: memory, e820: e820, rsdpAddress: rsdpAddress, lowRAMEnd: lowRAMEnd)
        }
        let header = try BzImageHeader.parse(head, fileSize: kernel.size, path: kernelPath)
        return try loadBzImage(header, file: kernel, initrdPath: initrdPath, commandLine: commandLineBytes,
                               memory: memory, e820: e820, rsdpAddress: rsdpAddress, lowRAMEnd: lowRAMEnd)
    }

    private static func loadBzImage(_ header: BzImageHeader, file: BootFile, initrdPath: String?, commandLine: [UInt8],
                                    memory: GuestMemory, e820: [E820Entry], rsdpAddress: UInt64,
                                    lowRAMEnd: UInt64) throws(BootError) -> BootEntry {
        let maximum = Int(min(UInt64(header.commandLineSize), X86Layout.commandLineCapacity - 1))
        guard commandLine.count <= maximum else { throw .commandLineTooLong(length: commandLine.count, maximum: maximum) }

        let loadAddress = X86Layout.kernelAddress
        let footprint = header.footprintEnd(loadAddress: loadAddress)
        guard let end = footprint, end <= lowRAMEnd,
              memory.contains(GuestAddress(loadAddress), count: end - loadAddress) else {
            throw .kernelDoesNotFit(path: file.path, end: footprint ?? .max, ramEnd: lowRAMEnd)
        }
        try file.load(at: header.setupSize, count: header.kernelSize, into: loadAddress, memory: memory,
                      outsideRAM: .kernelDoesNotFit(path: file.path, end: end, ramEnd: lowRAMEnd))

        let initrdLimit = UInt64(header.initrdAddressMax) + 1
        let initrd = try loadInitrd(initrdPath, floor: end, ceiling: min(initrdLimit, lowRAMEnd),
                                    ceilingIsInitrdAddrMax: initrdLimit < lowRAMEnd, memory: memory)
        let page = try ZeroPage.build(header: header, commandLineAddress: X86Layout.commandLineAddress,
                                      initrd: initrd, e820: e820, rsdpAddress: rsdpAddress)
        try write(page, at: X86Layout.bootParamsAddress, what: "zero page", memory: memory)
        try write(commandLine + [0], at: X86Layout.commandLineAddress, what: "command line", memory: memory)
        return .linux64(entry: loadAddress + 0x200, bootParams: X86Layout.bootParamsAddress)
    }

    private static func loadPVH(_ elf: ELFKernel, file: BootFile, initrdPath: String?, commandLine: [UInt8],
                                memory: GuestMemory, e820: [E820Entry], rsdpAddress: UInt64,
                                lowRAMEnd: UInt64) throws(BootError) -> BootEntry {
        guard commandLine.count <= pvhCommandLineLimit else {
            throw .commandLineTooLong(length: commandLine.count, maximum: pvhCommandLineLimit)
        }
        let ramStart = X86Layout.kernelAddress
        for segment in elf.segments {
            let outside = BootError.segmentOutsideRAM(
                path: file.path, index: segment.index, address: segment.physicalAddress, size: segment.memorySize,
                ramStart: ramStart, ramEnd: lowRAMEnd)
            guard segment.physicalAddress >= ramStart, segment.end <= lowRAMEnd,
                  memory.contains(GuestAddress(segment.physicalAddress), count: segment.memorySize) else { throw outside }
            try file.load(at: segment.fileOffset, count: segment.fileSize, into: segment.physicalAddress,
                          memory: memory, outsideRAM: outside)
            do {
                try memory.fill(0, count: segment.memorySize - segment.fileSize,
                                at: GuestAddress(segment.physicalAddress + segment.fileSize))
            } catch {
                throw outside
            }
        }
        let fourGiB: UInt64 = 1 << 32
        let initrd = try loadInitrd(initrdPath, floor: elf.end, ceiling: min(lowRAMEnd, fourGiB),
                                    ceilingIsInitrdAddrMax: false, memory: memory)
        let block = try PVHStartInfo.build(at: X86Layout.bootParamsAddress, commandLineAddress: X86Layout.commandLineAddress,
                                           initrd: initrd, e820: e820, rsdpAddress: rsdpAddress)
        try write(block, at: X86Layout.bootParamsAddress, what: "PVH start info", memory: memory)
        try write(commandLine + [0], at: X86Layout.commandLineAddress, what: "command line", memory: memory)
        return .pvh(entry: elf.pvhEntry, startInfo: X86Layout.bootParamsAddress)
    }

    /// Loads the initrd at the highest page-aligned address in `[floor, ceiling)`.
    private static func loadInitrd(_ path: String?, floor: UInt64, ceiling: UInt64, ceilingIsInitrdAddrMax: Bool,
                                   memory: GuestMemory) throws(BootError) -> InitrdPlacement? {
        guard let path else { return nil }
        let file = try BootFile.open(path, role: .initrd)
        defer { file.close() }
        let doesNotFit = BootError.initrdDoesNotFit(path: path, size: file.size, floor: floor, ceiling: ceiling,
                                                    ceilingIsInitrdAddrMax: ceilingIsInitrdAddrMax)
        guard let placement = InitrdPlacement.highest(size: file.size, floor: floor, ceiling: ceiling) else {
            throw doesNotFit
        }
        try file.load(at: 0, count: file.size, into: placement.address, memory: memory, outsideRAM: doesNotFit)
        return placement
    }

    private static func write(_ bytes: [UInt8], at address: UInt64, what: String, memory: GuestMemory) throws(BootError) {
        do {
            try memory.write(bytes, at: GuestAddress(address))
        } catch {
            throw .bootAreaNotInRAM(what: what, address: address, size: UInt64(bytes.count))
        }
    }
}

/// An open kernel or initrd file.
struct BootFile {
    let role: BootError.FileRole
    let path: String
    let descriptor: FileDescriptor
    /// The file's size when it was opened.
    let size: UInt64

    /// Opens `path`, which must be a non-empty regular file. The open never blocks: a FIFO, a
    /// device or a directory is refused instead of waiting for a writer.
    static func open(_ path: String, role: BootError.FileRole) throws(BootError) -> BootFile {
        let descriptor: FileDescriptor
        do {
            descriptor = try FileDescriptor.open(FilePath(path), .readOnly, options: [.closeOnExec, .nonBlocking])
        } catch {
            throw .openFailed(role, path: path, (error as? Errno) ?? .ioError)
        }
        let kind: FileKind, size: UInt64
        do {
            (kind, size) = try descriptor.kindAndSize()
        } catch {
            try? descriptor.close()
            throw .openFailed(role, path: path, error)
        }
        guard kind == .regular else {
            try? descriptor.close()
            throw .notARegularFile(role, path: path, kind: kind)
        }
        guard size > 0 else {
            try? descriptor.close()
            throw .emptyFile(role, path: path)
        }
        return BootFile(role: role, path: path, descriptor: descriptor, size: size)
    }

    func close() { try? descriptor.close() }

    /// Reads `count` bytes at `offset` (inside the file) straight into guest RAM at `address`.
    func load(at offset: UInt64, count: UInt64, into address: UInt64, memory: GuestMemory,
              outsideRAM: @autoclosure () -> BootError) throws(BootError) {
        do {
            try memory.read(from: descriptor, fileOffset: offset, count: count, into: GuestAddress(address))
        } catch {
            switch error {
            case .outOfRange: throw outsideRAM()
            case let .readFailed(errno): throw .readFailed(role, path: path, errno)
            case let .shortRead(expected, got): throw .shortRead(role, path: path, expected: expected, got: got)
            case .mapFailed, .invalidLayout, .misaligned, .writeFailed: throw .readFailed(role, path: path, .ioError)
            }
        }
    }

    /// Reads `count` bytes at `offset` (inside the file) into an array.
    func bytes(at offset: UInt64, count: Int) throws(BootError) -> [UInt8] {
        let bytes: [UInt8]
        do {
            bytes = try descriptor.readBytes(at: offset, count: count)
        } catch {
            throw .readFailed(role, path: path, error)
        }
        guard bytes.count == count else {
            throw .shortRead(role, path: path, expected: UInt64(count), got: UInt64(bytes.count))
        }
        return bytes
    }
}
