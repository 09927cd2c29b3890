import SwiftletMemory
import SystemPackage

/// Why a kernel, an initrd or the boot information could not be loaded.
///
/// Every case renders (``description``) as one line that names the file, says what is wrong
/// and what to do about it.
public enum BootError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Which of the boot files an error is about.
    public enum FileRole: String, Equatable, Sendable {
        case kernel, initrd
    }

    /// The file could not be opened (or its size could not be determined).
    case openFailed(FileRole, path: String, Errno)
    /// The path names a directory, a FIFO, a device or a socket: boot files must be regular files.
    case notARegularFile(FileRole, path: String, kind: FileKind)
    /// The file is empty (or, like a `/proc` file, reports a size of 0).
    case emptyFile(FileRole, path: String)
    /// Reading the file failed.
    case readFailed(FileRole, path: String, Errno)
    /// The file ended before `expected` bytes could be read although it was longer when opened.
    case shortRead(FileRole, path: String, expected: UInt64, got: UInt64)
    /// The kernel is neither a bzImage (`HdrS` at 0x202) nor an ELF file.
    case notAKernel(path: String)
    /// The kernel file is shorter than its own headers say (`source` names the header).
    case truncated(path: String, fileSize: UInt64, expected: UInt64, source: String)
    /// The bzImage setup header is inconsistent.
    case invalidBzImage(path: String, problem: BzImageProblem)
    /// The bzImage speaks a boot protocol older than 2.12 (no 64-bit entry point).
    case protocolTooOld(path: String, version: UInt16)
    /// The bzImage does not advertise the 64-bit entry point (`XLF_KERNEL_64`).
    case no64BitEntry(path: String)
    /// The ELF file is not a loadable x86-64 kernel image.
    case invalidELF(path: String, problem: ELFProblem)
    /// The ELF vmlinux has no `XEN_ELFNOTE_PHYS32_ENTRY` note, so it cannot be started with PVH.
    case noPVHNote(path: String)
    /// The kernel needs RAM up to `end` (exclusive) but usable low RAM ends at `ramEnd`.
    case kernelDoesNotFit(path: String, end: UInt64, ramEnd: UInt64)
    /// An ELF `PT_LOAD` segment lies outside the usable RAM `[ramStart, ramEnd)`.
    case segmentOutsideRAM(path: String, index: Int, address: UInt64, size: UInt64, ramStart: UInt64, ramEnd: UInt64)
    /// No page-aligned place of `size` bytes exists between `floor` (the kernel's end) and `ceiling`.
    ///
    /// `ceilingIsInitrdAddrMax` says whether the ceiling comes from the kernel's `initrd_addr_max`
    /// rather than from the end of low guest RAM.
    case initrdDoesNotFit(path: String, size: UInt64, floor: UInt64, ceiling: UInt64, ceilingIsInitrdAddrMax: Bool)
    /// The command line is longer than the kernel accepts (both without the terminating NUL).
    case commandLineTooLong(length: Int, maximum: Int)
    /// The command line contains a NUL byte, which would silently cut it short.
    case commandLineContainsNUL
    /// The memory map has more entries than the boot information can hold.
    case tooManyMemoryMapEntries(count: Int, maximum: Int)
    /// A fixed boot area (zero page, command line, ...) is not backed by guest RAM.
    case bootAreaNotInRAM(what: String, address: UInt64, size: UInt64)

    /// What is wrong with a bzImage setup header.
    public enum BzImageProblem: Equatable, Sendable, CustomStringConvertible {
        /// `boot_flag` at 0x1fe is not 0xaa55.
        case badBootFlag(UInt16)
        /// `loadflags` lacks `LOADED_HIGH`: a zImage, which loads at 0x10000.
        case notLoadedHigh
        /// `syssize` is zero.
        case emptyKernel
        /// `kernel_alignment` of a relocatable kernel is not a power of two.
        case badKernelAlignment(UInt32)
        /// `payload_offset + payload_length` runs past the protected-mode code.
        case payloadOutsideKernel(offset: UInt32, length: UInt32, kernelSize: UInt64)

        public var description: String {
            switch self {
            case let .badBootFlag(flag):
                return "boot_flag at 0x1fe is \(loaderHex(UInt64(flag))), not 0xaa55"
            case .notLoadedHigh:
                return "loadflags lacks LOADED_HIGH (this is a zImage, not a bzImage)"
            case .emptyKernel:
                return "syssize is 0 (no protected-mode code)"
            case let .badKernelAlignment(alignment):
                return "kernel_alignment \(loaderHex(UInt64(alignment))) is not a power of two"
            case let .payloadOutsideKernel(offset, length, kernelSize):
                return "payload_offset \(loaderHex(UInt64(offset))) + payload_length \(loaderHex(UInt64(length))) "
                    + "runs past the \(kernelSize)-byte protected-mode code"
            }
        }
    }

    /// What is wrong with an ELF kernel image.
    public enum ELFProblem: Equatable, Sendable, CustomStringConvertible {
        /// `EI_CLASS` is not `ELFCLASS64` (2).
        case not64Bit(UInt8)
        /// `EI_DATA` is not `ELFDATA2LSB` (1).
        case notLittleEndian(UInt8)
        /// `e_type` is not `ET_EXEC` (2).
        case notExecutable(UInt16)
        /// `e_machine` is not `EM_X86_64` (62).
        case wrongMachine(UInt16)
        /// `e_phentsize` is smaller than an `Elf64_Phdr` (56 bytes) or larger than 1024.
        case badProgramHeaderSize(UInt16)
        /// `e_phnum` is zero.
        case noProgramHeaders
        /// `e_phnum` is larger than Swiftlet accepts.
        case tooManyProgramHeaders(count: Int, maximum: Int)
        /// The program header table does not lie inside the file.
        case programHeadersOutsideFile(offset: UInt64, size: UInt64)
        /// A segment's file bytes do not lie inside the file (or their end overflows 64 bits).
        case segmentOutsideFile(index: Int, offset: UInt64, size: UInt64)
        /// A `PT_LOAD` segment has `p_filesz > p_memsz`.
        case segmentFileSizeExceedsMemorySize(index: Int, fileSize: UInt64, memorySize: UInt64)
        /// A `PT_LOAD` segment's `p_paddr + p_memsz` overflows 64 bits.
        case segmentAddressOverflow(index: Int, address: UInt64, size: UInt64)
        /// There is no non-empty `PT_LOAD` segment.
        case noLoadableSegments
        /// The PVH note's descriptor is neither 4 nor 8 bytes.
        case badPVHNote(descriptorSize: UInt32)
        /// The PVH entry point is not inside any `PT_LOAD` segment.
        case entryOutsideSegments(UInt64)

        public var description: String {
            switch self {
            case let .not64Bit(elfClass):
                return "EI_CLASS is \(elfClass), not 2 (ELFCLASS64)"
            case let .notLittleEndian(data):
                return "EI_DATA is \(data), not 1 (little-endian)"
            case let .notExecutable(type):
                return "e_type is \(type), not 2 (ET_EXEC)"
            case let .wrongMachine(machine):
                return "e_machine is \(machine), not 62 (EM_X86_64)"
            case let .badProgramHeaderSize(size):
                return "e_phentsize is \(size), not between 56 (an Elf64_Phdr) and 1024"
            case .noProgramHeaders:
                return "it has no program headers"
            case let .tooManyProgramHeaders(count, maximum):
                return "it has \(count) program headers (at most \(maximum) accepted)"
            case let .programHeadersOutsideFile(offset, size):
                return "the program header table (\(size) bytes at file offset \(loaderHex(offset))) runs past the end of the file"
            case let .segmentOutsideFile(index, offset, size):
                return "segment \(index) (\(size) bytes at file offset \(loaderHex(offset))) runs past the end of the file"
            case let .segmentFileSizeExceedsMemorySize(index, fileSize, memorySize):
                return "segment \(index) has p_filesz \(loaderHex(fileSize)) larger than p_memsz \(loaderHex(memorySize))"
            case let .segmentAddressOverflow(index, address, size):
                return "segment \(index) at \(loaderHex(address)) with p_memsz \(loaderHex(size)) wraps past the top of the address space"
            case .noLoadableSegments:
                return "it has no PT_LOAD segment"
            case let .badPVHNote(descriptorSize):
                return "the PVH entry note has a \(descriptorSize)-byte descriptor (expected 4 or 8)"
            case let .entryOutsideSegments(entry):
                return "the PVH entry point \(loaderHex(entry)) is not inside any PT_LOAD segment"
            }
        }
    }

    public var description: String {
        switch self {
        case let .openFailed(role, path, errno):
            return "\(role.rawValue) \"\(path)\": cannot open: \(errno); check the path and its permissions"
        case let .notARegularFile(role, path, kind):
            return "\(role.rawValue) \"\(path)\" is \(kind.described), not a regular file; pass the \(role.rawValue) file itself"
        case let .emptyFile(role, path):
            return "\(role.rawValue) \"\(path)\" is empty (0 bytes); pass "
                + (role == .kernel ? "a Linux bzImage or an ELF vmlinux" : "a real initrd or none")
        case let .readFailed(role, path, errno):
            return "\(role.rawValue) \"\(path)\": read failed: \(errno)"
        case let .shortRead(role, path, expected, got):
            return "\(role.rawValue) \"\(path)\": file ended after \(got) of \(expected) bytes; was it changed while loading?"
        case let .notAKernel(path):
            return "kernel \"\(path)\": not a bzImage or ELF vmlinux (no \"HdrS\" magic at 0x202 and no ELF magic); "
                + "pass a Linux bzImage or an ELF vmlinux with a PVH note"
        case let .truncated(path, fileSize, expected, source):
            return "kernel \"\(path)\": truncated (file is \(fileSize) bytes, \(source) says \(expected)); "
                + "the file is incomplete, fetch or build it again"
        case let .invalidBzImage(path, problem):
            return "kernel \"\(path)\": invalid bzImage: \(problem); pass an unmodified Linux bzImage"
        case let .protocolTooOld(path, version):
            return "kernel \"\(path)\": boot protocol \(Self.protocolString(version)) is too old "
                + "(need 2.12+ for the 64-bit entry); use a newer x86_64 kernel"
        case let .no64BitEntry(path):
            return "kernel \"\(path)\": bzImage has no 64-bit entry point (XLF_KERNEL_64 clear in xloadflags); "
                + "use an x86_64 kernel"
        case let .invalidELF(path, problem):
            return "kernel \"\(path)\": not a loadable x86-64 ELF vmlinux: \(problem); pass an x86-64 vmlinux or the bzImage"
        case let .noPVHNote(path):
            return "kernel \"\(path)\": ELF vmlinux has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); use the bzImage"
        case let .kernelDoesNotFit(path, end, ramEnd):
            return "kernel \"\(path)\" needs guest RAM up to \(loaderHex(end)) but usable low RAM ends at \(loaderHex(ramEnd)); "
                + "give the guest more memory"
        case let .segmentOutsideRAM(path, index, address, size, ramStart, ramEnd):
            return "kernel \"\(path)\": ELF segment \(index) (\(formatByteCount(size)) at \(loaderHex(address))) lies outside "
                + "usable guest RAM [\(loaderHex(ramStart)), \(loaderHex(ramEnd))); give the guest more memory or check the image"
        case let .initrdDoesNotFit(path, size, floor, ceiling, fromInitrdAddrMax):
            let limit = fromInitrdAddrMax ? "initrd_addr_max" : "end of low guest RAM"
            return "initrd \"\(path)\" (\(formatByteCount(size))) does not fit below \(loaderHex(ceiling)) (\(limit)) "
                + "above the kernel's end at \(loaderHex(floor)); give the guest more memory"
        case let .commandLineTooLong(length, maximum):
            return "command line is \(length) bytes; the kernel accepts at most \(maximum)"
        case .commandLineContainsNUL:
            return "command line contains a NUL byte, which would cut it short; remove it"
        case let .tooManyMemoryMapEntries(count, maximum):
            return "memory map has \(count) entries; the boot information holds at most \(maximum)"
        case let .bootAreaNotInRAM(what, address, size):
            return "cannot place the \(what) (\(size) bytes at \(loaderHex(address))): not in guest RAM; "
                + "guest RAM must start at address 0"
        }
    }

    /// A boot protocol version as `2.15`.
    static func protocolString(_ version: UInt16) -> String {
        let minor = version & 0xff
        return "\(version >> 8).\(minor < 10 ? "0" : "")\(minor)"
    }
}

/// A number as `0x1f00` (named to stay clear of other helpers in this module).
func loaderHex(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }
