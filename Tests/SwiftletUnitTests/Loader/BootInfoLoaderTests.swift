import SwiftletCore
import SwiftletArch
import Testing
@testable import SwiftletBoot

@Suite("Loader: boot information builders") struct BootInfoLoaderTests {
    private let e820 = [
        E820Entry(address: 0, size: 0x9_fc00, kind: .ram),
        E820Entry(address: 0xe_0000, size: 0x2_0000, kind: .acpiReclaimable),
        E820Entry(address: 0x10_0000, size: 0x3ff0_0000, kind: .ram),
        E820Entry(address: 0x1_0000_0000, size: 0x4000_0000, kind: .ram),
    ]

    @Test func zeroPageByteByByte() throws {
        let header = try BzImageHeader.parse(Array(CraftedBzImage().bytes.prefix(4096)),
                                             fileSize: UInt64(CraftedBzImage().bytes.count), path: "/x")
        let initrd = InitrdPlacement(address: 0x1_2345_6000, size: 0x1_0000_0010)
        let page = try ZeroPage.build(header: header, commandLineAddress: 0x2_0000, initrd: initrd, e820: e820,
                                      rsdpAddress: 0xe_0000)
        var expected = [UInt8](repeating: 0, count: 4096)
        expected.replaceSubrange(0x1f1..<0x26c, with: header.setupHeader)
        expected.storeLittleEndian(UInt64(0xe_0000), at: 0x070)
        expected.storeLittleEndian(UInt32(0x1), at: 0x0c0)  // ext_ramdisk_image
        expected.storeLittleEndian(UInt32(0x1), at: 0x0c4)  // ext_ramdisk_size
        expected.storeLittleEndian(UInt32(0), at: 0x0c8)  // ext_cmd_line_ptr
        expected[0x1e8] = 4
        expected.storeLittleEndian(UInt16(0xffff), at: 0x1fa)
        expected[0x210] = 0xff
        expected[0x211] = 0x81
        expected.storeLittleEndian(UInt32(0x2345_6000), at: 0x218)
        expected.storeLittleEndian(UInt32(0x10), at: 0x21c)
        expected.storeLittleEndian(UInt16(0xfe00), at: 0x224)
        expected.storeLittleEndian(UInt32(0x2_0000), at: 0x228)
        for (index, entry) in e820.enumerated() {
            expected.storeLittleEndian(entry.address, at: 0x2d0 + 20 * index)
            expected.storeLittleEndian(entry.size, at: 0x2d0 + 20 * index + 8)
            expected.storeLittleEndian(entry.kind.rawValue, at: 0x2d0 + 20 * index + 16)
        }
        #expect(page == expected)
        #expect(page[0x2d0 + 20 * 3 + 16] == 1)
    }

    @Test func zeroPageRefusesMoreThan128Entries() throws {
        let header = try BzImageHeader.parse(CraftedBzImage().bytes, fileSize: UInt64(CraftedBzImage().bytes.count), path: "/x")
        let many = [E820Entry](repeating: E820Entry(address: 0, size: 4096, kind: .ram), count: 128)
        #expect(try ZeroPage.build(header: header, commandLineAddress: 0, initrd: nil, e820: many, rsdpAddress: 0)[0x1e8] == 128)
        #expect(throws: BootError.tooManyMemoryMapEntries(count: 129, maximum: 128)) {
            try ZeroPage.build(header: header, commandLineAddress: 0, initrd: nil, e820: many + [many[0]], rsdpAddress: 0)
        }
    }

    @Test func startInfoByteByByte() throws {
        let block = try PVHStartInfo.build(at: 0x7000, commandLineAddress: 0x2_0000, initrd: nil, e820: e820, rsdpAddress: 0)
        var expected = [UInt8](repeating: 0, count: 0x60 + 4 * 24)
        expected.storeLittleEndian(UInt32(0x336e_c578), at: 0)
        expected.storeLittleEndian(UInt32(1), at: 4)
        expected.storeLittleEndian(UInt64(0x2_0000), at: 0x18)
        expected.storeLittleEndian(UInt64(0x7060), at: 0x28)
        expected.storeLittleEndian(UInt32(4), at: 0x30)
        for (index, entry) in e820.enumerated() {
            expected.storeLittleEndian(entry.address, at: 0x60 + 24 * index)
            expected.storeLittleEndian(entry.size, at: 0x60 + 24 * index + 8)
            expected.storeLittleEndian(entry.kind.rawValue, at: 0x60 + 24 * index + 16)
        }
        #expect(block == expected)

        let withInitrd = try PVHStartInfo.build(at: 0x7000, commandLineAddress: 0x2_0000,
                                                initrd: InitrdPlacement(address: 0x300_0000, size: 1234),
                                                e820: [], rsdpAddress: 0xe_0000)
        #expect(withInitrd.count == 0x60)
        #expect(withInitrd.loadLittleEndian(UInt32.self, at: 0x0c) == 1)
        #expect(withInitrd.loadLittleEndian(UInt64.self, at: 0x10) == 0x7040)
        #expect(withInitrd.loadLittleEndian(UInt64.self, at: 0x20) == 0xe_0000)
        #expect(withInitrd.loadLittleEndian(UInt64.self, at: 0x40) == 0x300_0000)
        #expect(withInitrd.loadLittleEndian(UInt64.self, at: 0x48) == 1234)
        #expect(withInitrd.loadLittleEndian(UInt32.self, at: 0x30) == 0)
    }

    @Test func initrdPlacement() {
        #expect(InitrdPlacement.highest(size: 0x1000, floor: 0, ceiling: 0x1_0000) == .init(address: 0xf000, size: 0x1000))
        #expect(InitrdPlacement.highest(size: 0x1001, floor: 0, ceiling: 0x1_0000) == .init(address: 0xe000, size: 0x1001))
        #expect(InitrdPlacement.highest(size: 0x1000, floor: 0xf000, ceiling: 0x1_0000) == .init(address: 0xf000, size: 0x1000))
        #expect(InitrdPlacement.highest(size: 0x1000, floor: 0xf001, ceiling: 0x1_0000) == nil)
        #expect(InitrdPlacement.highest(size: 0x2_0000, floor: 0, ceiling: 0x1_0000) == nil)
        #expect(InitrdPlacement.highest(size: 0, floor: 0, ceiling: 0x1_0000) == nil)
        #expect(InitrdPlacement.highest(size: .max, floor: 0, ceiling: .max) == .init(address: 0, size: .max))
    }

    @Test func messagesNameTheFileAndTheRemedy() {
        #expect(BootError.initrdDoesNotFit(path: "/y", size: 300 << 20, floor: 0x400_0000, ceiling: 0x1000_0000,
                                           ceilingIsInitrdAddrMax: true).description
            == "initrd \"/y\" (300 MiB) does not fit below 0x10000000 (initrd_addr_max) above the kernel's end at 0x4000000; "
            + "give the guest more memory")
        #expect(BootError.openFailed(.kernel, path: "/k", .noSuchFileOrDirectory).description
            .hasPrefix("kernel \"/k\": cannot open: "))
        #expect(BootError.kernelDoesNotFit(path: "/k", end: 0x437_8000, ramEnd: 0x200_0000).description
            == "kernel \"/k\" needs guest RAM up to 0x4378000 but usable low RAM ends at 0x2000000; give the guest more memory")
    }
}
