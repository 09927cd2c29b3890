import SwiftletArch
import SwiftletCore

/// Where an initrd was placed in guest RAM.
public struct InitrdPlacement: Equatable, Sendable {
    /// The guest-physical address of its first byte (page-aligned).
    public var address: UInt64
    /// Its size in bytes.
    public var size: UInt64

    /// Creates a placement.
    public init(address: UInt64, size: UInt64) {
        self.address = address
        self.size = size
    }

    /// The highest page-aligned placement of `size` bytes that ends at or below `ceiling` and starts
    /// at or above `floor`, or `nil` if there is none (or `size` is zero).
    public static func highest(size: UInt64, floor: UInt64, ceiling: UInt64) -> InitrdPlacement? {
        guard size > 0, size <= ceiling else { return nil }
        let address = (ceiling - size) & ~UInt64(0xfff)
        guard address >= floor else { return nil }
        return InitrdPlacement(address: address, size: size)
    }
}

/// Builds the zero page (`struct boot_params`) for the Linux 64-bit boot protocol.
public enum ZeroPage {
    /// The size of `struct boot_params`.
    public static let size = 4096
    /// The capacity of `e820_table`.
    public static let maxE820Entries = 128

    /// Offsets of the fields Swiftlet fills in.
    public enum Offset {
        /// `acpi_rsdp_addr` (u64).
        public static let acpiRSDPAddress = 0x070
        /// `ext_ramdisk_image`: bits 32-63 of the initrd address (u32).
        public static let extRamdiskImage = 0x0c0
        /// `ext_ramdisk_size`: bits 32-63 of the initrd size (u32).
        public static let extRamdiskSize = 0x0c4
        /// `ext_cmd_line_ptr`: bits 32-63 of the command line address (u32).
        public static let extCmdLinePtr = 0x0c8
        /// `e820_entries` (u8).
        public static let e820Entries = 0x1e8
        /// `hdr.vid_mode` (u16).
        public static let vidMode = 0x1fa
        /// `hdr.type_of_loader` (u8).
        public static let typeOfLoader = 0x210
        /// `hdr.loadflags` (u8).
        public static let loadFlags = 0x211
        /// `hdr.ramdisk_image` (u32).
        public static let ramdiskImage = 0x218
        /// `hdr.ramdisk_size` (u32).
        public static let ramdiskSize = 0x21c
        /// `hdr.heap_end_ptr` (u16).
        public static let heapEndPtr = 0x224
        /// `hdr.cmd_line_ptr` (u32).
        public static let cmdLinePtr = 0x228
        /// `e820_table`: 128 entries of 20 bytes (address u64, size u64, type u32).
        public static let e820Table = 0x2d0
    }

    /// Builds the zero page: the kernel's own setup header, then the loader's fields.
    ///
    /// Sets `type_of_loader` 0xff (undefined loader), `loadflags |= CAN_USE_HEAP` with
    /// `heap_end_ptr` 0xfe00, `vid_mode` 0xffff (normal), the command line pointer, the initrd
    /// (if any), the E820 map and the ACPI RSDP address (0 for none); everything else is zero.
    ///
    /// - Throws: ``BootError/tooManyMemoryMapEntries(count:maximum:)`` for more than 128 entries.
    public static func build(header: BzImageHeader, commandLineAddress: UInt64, initrd: InitrdPlacement?,
                             e820: [E820Entry], rsdpAddress: UInt64) throws(BootError) -> [UInt8] {
        guard e820.count <= maxE820Entries else {
            throw .tooManyMemoryMapEntries(count: e820.count, maximum: maxE820Entries)
        }
        var page = [UInt8](repeating: 0, count: size)
        page.replaceSubrange(BzImageHeader.headerOffset..<BzImageHeader.headerOffset + header.setupHeader.count,
                             with: header.setupHeader)
        page.storeLittleEndian(UInt16(0xffff), at: Offset.vidMode)
        page[Offset.typeOfLoader] = 0xff
        page[Offset.loadFlags] |= BzImageHeader.canUseHeap
        page.storeLittleEndian(UInt16(0xfe00), at: Offset.heapEndPtr)
        page.storeLittleEndian(UInt32(truncatingIfNeeded: commandLineAddress), at: Offset.cmdLinePtr)
        page.storeLittleEndian(UInt32(truncatingIfNeeded: commandLineAddress >> 32), at: Offset.extCmdLinePtr)
        if let initrd {
            page.storeLittleEndian(UInt32(truncatingIfNeeded: initrd.address), at: Offset.ramdiskImage)
            page.storeLittleEndian(UInt32(truncatingIfNeeded: initrd.address >> 32), at: Offset.extRamdiskImage)
            page.storeLittleEndian(UInt32(truncatingIfNeeded: initrd.size), at: Offset.ramdiskSize)
            page.storeLittleEndian(UInt32(truncatingIfNeeded: initrd.size >> 32), at: Offset.extRamdiskSize)
        }
        page.storeLittleEndian(rsdpAddress, at: Offset.acpiRSDPAddress)
        page[Offset.e820Entries] = UInt8(e820.count)
        for (index, entry) in e820.enumerated() {
            let base = Offset.e820Table + index * 20
            page.storeLittleEndian(entry.address, at: base)
            page.storeLittleEndian(entry.size, at: base + 8)
            page.storeLittleEndian(entry.kind.rawValue, at: base + 16)
        }
        return page
    }
}

/// Builds Xen's PVH boot information: `struct hvm_start_info` (version 1) followed by its module
/// list and memory map, all in one block.
///
/// Layout of the block (offsets from its start):
/// ```
/// 0x00  hvm_start_info (56 bytes)
/// 0x40  hvm_modlist_entry for the initrd (32 bytes; present but unused without an initrd)
/// 0x60  hvm_memmap_table_entry[n] (24 bytes each)
/// ```
public enum PVHStartInfo {
    /// `XEN_HVM_START_MAGIC_VALUE`.
    public static let magic: UInt32 = 0x336e_c578
    /// The structure version written (1: with the memory map).
    public static let version: UInt32 = 1
    /// Offset of the module list in the block.
    public static let moduleListOffset = 0x40
    /// Offset of the memory map in the block.
    public static let memoryMapOffset = 0x60
    /// The size of one `hvm_memmap_table_entry`.
    public static let memoryMapEntrySize = 24
    /// The most memory map entries written (the same limit as the zero page).
    public static let maxMemoryMapEntries = 128

    /// Builds the block that will be written at guest-physical `address`.
    ///
    /// The memory map copies the E820 entries (PVH memory types equal E820 types).
    ///
    /// - Throws: ``BootError/tooManyMemoryMapEntries(count:maximum:)`` for more than 128 entries.
    public static func build(at address: UInt64, commandLineAddress: UInt64, initrd: InitrdPlacement?,
                             e820: [E820Entry], rsdpAddress: UInt64) throws(BootError) -> [UInt8] {
        guard e820.count <= maxMemoryMapEntries else {
            throw .tooManyMemoryMapEntries(count: e820.count, maximum: maxMemoryMapEntries)
        }
        var block = [UInt8](repeating: 0, count: memoryMapOffset + e820.count * memoryMapEntrySize)
        block.storeLittleEndian(magic, at: 0x00)
        block.storeLittleEndian(version, at: 0x04)
        block.storeLittleEndian(UInt32(0), at: 0x08)  // flags
        if let initrd {
            block.storeLittleEndian(UInt32(1), at: 0x0c)  // nr_modules
            block.storeLittleEndian(address &+ UInt64(moduleListOffset), at: 0x10)
            block.storeLittleEndian(initrd.address, at: moduleListOffset)
            block.storeLittleEndian(initrd.size, at: moduleListOffset + 8)
        }
        block.storeLittleEndian(commandLineAddress, at: 0x18)
        block.storeLittleEndian(rsdpAddress, at: 0x20)
        block.storeLittleEndian(address &+ UInt64(memoryMapOffset), at: 0x28)
        block.storeLittleEndian(UInt32(e820.count), at: 0x30)
        for (index, entry) in e820.enumerated() {
            let base = memoryMapOffset + index * memoryMapEntrySize
            block.storeLittleEndian(entry.address, at: base)
            block.storeLittleEndian(entry.size, at: base + 8)
            block.storeLittleEndian(entry.kind.rawValue, at: base + 16)
        }
        return block
    }
}
