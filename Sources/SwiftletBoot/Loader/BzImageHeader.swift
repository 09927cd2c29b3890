import SwiftletCore
import SwiftletMemory

/// The validated setup header of a Linux x86 bzImage (Documentation/arch/x86/boot.rst).
///
/// A bzImage is a real-mode setup area of `(setup_sects + 1) * 512` bytes, whose second half
/// starts with the setup header at 0x1f1, followed by the protected-mode code (the decompressor
/// with the compressed kernel). Swiftlet uses the 64-bit boot protocol: it copies the
/// protected-mode code to 1 MiB and enters it at `+0x200` in long mode.
public struct BzImageHeader: Equatable, Sendable {
    /// Offset of the setup header (`hdr`) in the file and in the zero page.
    public static let headerOffset = 0x1f1
    /// The oldest boot protocol with the 64-bit entry point (`xloadflags`): 2.12.
    public static let minimumVersion: UInt16 = 0x020c
    /// How many leading bytes of the file ``parse(_:fileSize:path:)`` wants (it needs at least 0x400).
    public static let bytesNeeded = 0x1000

    /// `loadflags` bit 0: the protected-mode code loads at 0x100000.
    public static let loadedHigh: UInt8 = 0x01
    /// `loadflags` bit 7: `heap_end_ptr` is valid.
    public static let canUseHeap: UInt8 = 0x80
    /// `xloadflags` bit 0: the kernel has the 64-bit entry point at `+0x200`.
    public static let xlfKernel64: UInt16 = 0x01
    /// `xloadflags` bit 1: the kernel, boot_params, command line and initrd may lie above 4 GiB.
    public static let xlfCanBeLoadedAbove4G: UInt16 = 0x02

    /// The file the header came from (for messages).
    public let path: String
    /// The size of the whole file in bytes.
    public let fileSize: UInt64
    /// The number of 512-byte setup sectors after the boot sector (`setup_sects`, with 0 meaning 4).
    public let setupSectors: Int
    /// The size of the protected-mode code in 16-byte paragraphs (`syssize`).
    public let systemParagraphs: UInt32
    /// The boot protocol version, as 0x020f for 2.15.
    public let version: UInt16
    /// `loadflags`.
    public let loadFlags: UInt8
    /// The highest address the initrd may occupy (`initrd_addr_max`).
    public let initrdAddressMax: UInt32
    /// The physical alignment a relocatable kernel needs (`kernel_alignment`).
    public let kernelAlignment: UInt32
    /// Whether the kernel can run at any suitably aligned address (`relocatable_kernel`).
    public let isRelocatable: Bool
    /// `xloadflags`.
    public let xloadFlags: UInt16
    /// The longest command line the kernel accepts, without the NUL (`cmdline_size`).
    public let commandLineSize: UInt32
    /// The address the kernel prefers to run at (`pref_address`).
    public let preferredAddress: UInt64
    /// The linear memory the kernel needs from its run address before it reads the memory map (`init_size`).
    public let initSize: UInt32
    /// The raw setup header bytes, from 0x1f1 up to `0x202 + (byte at 0x201)`, copied into the zero page.
    public let setupHeader: [UInt8]

    /// The size of the real-mode setup area: `(setupSectors + 1) * 512`.
    public var setupSize: UInt64 { UInt64(setupSectors + 1) * 512 }
    /// The size of the protected-mode code: everything in the file after the setup area.
    public var kernelSize: UInt64 { fileSize - setupSize }
    /// Whether the kernel has the 64-bit entry point.
    public var hasKernel64Entry: Bool { xloadFlags & Self.xlfKernel64 != 0 }
    /// Whether the kernel accepts being loaded, and its boot data placed, above 4 GiB.
    public var canBeLoadedAbove4G: Bool { xloadFlags & Self.xlfCanBeLoadedAbove4G != 0 }
    /// The boot protocol version as `2.15`.
    public var versionString: String { BootError.protocolString(version) }

    /// Parses and validates the setup header.
    ///
    /// - Parameters:
    ///   - firstBytes: the file's first ``bytesNeeded`` bytes (or the whole file when it is shorter).
    ///   - fileSize: the size of the whole file.
    ///   - path: the file's path, for messages.
    /// - Throws: ``BootError/notAKernel(path:)`` without the `HdrS` magic, ``BootError/truncated(path:fileSize:expected:source:)``,
    ///   ``BootError/protocolTooOld(path:version:)``, ``BootError/no64BitEntry(path:)`` or
    ///   ``BootError/invalidBzImage(path:problem:)``.
    public static func parse(_ firstBytes: [UInt8], fileSize: UInt64, path: String) throws(BootError) -> BzImageHeader {
        guard firstBytes.count >= 0x206, Array(firstBytes[0x202..<0x206]) == Array("HdrS".utf8) else {
            throw .notAKernel(path: path)
        }
        let bootFlag = firstBytes.loadLittleEndian(UInt16.self, at: 0x1fe)
        guard bootFlag == 0xaa55 else { throw .invalidBzImage(path: path, problem: .badBootFlag(bootFlag)) }
        let version = firstBytes.loadLittleEndian(UInt16.self, at: 0x206)
        guard version >= minimumVersion else { throw .protocolTooOld(path: path, version: version) }

        let rawSetupSectors = Int(firstBytes[0x1f1])
        let setupSectors = rawSetupSectors == 0 ? 4 : rawSetupSectors
        let setupSize = UInt64(setupSectors + 1) * 512
        guard fileSize > setupSize, UInt64(firstBytes.count) >= min(fileSize, 0x400) else {
            throw .truncated(path: path, fileSize: fileSize, expected: setupSize, source: "setup header")
        }
        // The setup area is at least 1 KiB, so every field up to 0x400 is present from here on.
        let systemParagraphs = firstBytes.loadLittleEndian(UInt32.self, at: 0x1f4)
        let described = UInt64(systemParagraphs) * 16
        // The build pads the protected-mode code to whole paragraphs; allow that rounding.
        guard fileSize - setupSize + 15 >= described else {
            throw .truncated(path: path, fileSize: fileSize, expected: setupSize + described, source: "setup header")
        }
        let xloadFlags = firstBytes.loadLittleEndian(UInt16.self, at: 0x236)
        guard xloadFlags & xlfKernel64 != 0 else { throw .no64BitEntry(path: path) }
        let loadFlags = firstBytes[0x211]
        guard loadFlags & loadedHigh != 0 else { throw .invalidBzImage(path: path, problem: .notLoadedHigh) }
        guard systemParagraphs != 0 else { throw .invalidBzImage(path: path, problem: .emptyKernel) }

        let isRelocatable = firstBytes[0x234] != 0
        let kernelAlignment = firstBytes.loadLittleEndian(UInt32.self, at: 0x230)
        if isRelocatable, kernelAlignment == 0 || kernelAlignment & (kernelAlignment - 1) != 0 {
            throw .invalidBzImage(path: path, problem: .badKernelAlignment(kernelAlignment))
        }
        let kernelSize = fileSize - setupSize
        let payloadOffset = firstBytes.loadLittleEndian(UInt32.self, at: 0x248)
        let payloadLength = firstBytes.loadLittleEndian(UInt32.self, at: 0x24c)
        guard UInt64(payloadOffset) + UInt64(payloadLength) <= kernelSize else {
            throw .invalidBzImage(path: path, problem: .payloadOutsideKernel(
                offset: payloadOffset, length: payloadLength, kernelSize: kernelSize))
        }
        let headerEnd = 0x202 + Int(firstBytes[0x201])

        return BzImageHeader(
            path: path, fileSize: fileSize, setupSectors: setupSectors, systemParagraphs: systemParagraphs,
            version: version, loadFlags: loadFlags,
            initrdAddressMax: firstBytes.loadLittleEndian(UInt32.self, at: 0x22c),
            kernelAlignment: kernelAlignment, isRelocatable: isRelocatable, xloadFlags: xloadFlags,
            commandLineSize: firstBytes.loadLittleEndian(UInt32.self, at: 0x238),
            preferredAddress: firstBytes.loadLittleEndian(UInt64.self, at: 0x258),
            initSize: firstBytes.loadLittleEndian(UInt32.self, at: 0x260),
            setupHeader: Array(firstBytes[headerOffset..<headerEnd]))
    }

    /// The first byte after the memory the kernel uses before it has read the memory map, when its
    /// protected-mode code is loaded at `loadAddress`; `nil` if that overflows 64 bits.
    ///
    /// That is the larger of the end of the loaded code and the end of the decompression buffer:
    /// the 64-bit entry decompresses to its run address (for a relocatable kernel, `loadAddress`
    /// rounded up to `kernel_alignment` but at least `pref_address`; otherwise `pref_address`)
    /// and needs `init_size` bytes from there. Nothing else (initrd included) may lie below it.
    public func footprintEnd(loadAddress: UInt64) -> UInt64? {
        guard let loadedEnd = loaderAdd(loadAddress, kernelSize) else { return nil }
        var runAddress = preferredAddress
        if isRelocatable {
            // `parse` checked that a relocatable kernel's alignment is a power of two.
            guard let aligned = GuestAddress(loadAddress).alignedUp(to: UInt64(kernelAlignment))?.rawValue else { return nil }
            runAddress = max(aligned, preferredAddress)
        }
        if runAddress == 0 { runAddress = loadAddress }
        guard let runEnd = loaderAdd(runAddress, UInt64(max(initSize, UInt32(clamping: kernelSize)))) else {
            return nil
        }
        return max(loadedEnd, runEnd)
    }
}
