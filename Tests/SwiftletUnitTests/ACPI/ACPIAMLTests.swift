import Testing
@testable import SwiftletBoot

@Suite("ACPI AML") struct ACPIAMLTests {
    @Test func packageLengthUsesAllFourForms() throws {
        #expect(try AML.packageLength(contentLength: 0) == [0x01])
        #expect(try AML.packageLength(contentLength: 62) == [0x3f])
        // 63 content bytes + 2 length bytes = 65 = 0x41.
        #expect(try AML.packageLength(contentLength: 63) == [0x41, 0x04])
        #expect(try AML.packageLength(contentLength: 0xfff - 2) == [0x4f, 0xff])
        // 0xffe + 3 = 0x1001.
        #expect(try AML.packageLength(contentLength: 0xffe) == [0x81, 0x00, 0x01])
        #expect(try AML.packageLength(contentLength: 0xf_ffff - 3) == [0x8f, 0xff, 0xff])
        // 0xffffd + 4 = 0x100001.
        #expect(try AML.packageLength(contentLength: 0xf_fffd) == [0xc1, 0x00, 0x00, 0x01])
        #expect(try AML.packageLength(contentLength: 0xfff_ffff - 4) == [0xcf, 0xff, 0xff, 0xff])
        #expect(throws: ACPIError.packageLengthTooLarge(0xfff_ffff - 3)) {
            try AML.packageLength(contentLength: 0xfff_ffff - 3)
        }
    }

    @Test func eisaIDCompression() throws {
        #expect(try AML.compressedEISAID("PNP0501") == 0x0105_d041)
        #expect(try AML.compressedEISAID("PNP0B00") == 0x000b_d041)
        #expect(try AML.compressedEISAID("PNP0A03") == 0x030a_d041)
        #expect(try AML.eisaID("PNP0501").bytes == [0x0c, 0x41, 0xd0, 0x05, 0x01])
        for bad in ["PNP050", "pnp0501", "PNP05G1", "P1P0501", "PNP05011"] {
            #expect(throws: ACPIError.invalidEISAID(bad)) { try AML.compressedEISAID(bad) }
        }
    }

    @Test func integersUseTheShortestEncoding() {
        #expect(AML.integer(0).bytes == [0x00])
        #expect(AML.integer(1).bytes == [0x01])
        #expect(AML.integer(5).bytes == [0x0a, 0x05])
        #expect(AML.integer(0x3f8).bytes == [0x0b, 0xf8, 0x03])
        #expect(AML.integer(0xd000_0000 as UInt64).bytes == [0x0c, 0x00, 0x00, 0x00, 0xd0])
        #expect(AML.integer(0x1_0000_0000 as UInt64).bytes == [0x0e, 0, 0, 0, 0, 1, 0, 0, 0])
    }

    @Test func nameStrings() throws {
        #expect(try AML.nameString("_SB") == Array("_SB_".utf8))
        #expect(try AML.nameString("\\_SB") == [0x5c] + Array("_SB_".utf8))
        #expect(try AML.nameString("\\_SB.COM1") == [0x5c, 0x2e] + Array("_SB_COM1".utf8))
        #expect(try AML.nameString("_SB.PCI0.ISA") == [0x2f, 3] + Array("_SB_PCI0ISA_".utf8))
        #expect(try AML.nameString("^^FOO") == [0x5e, 0x5e] + Array("FOO_".utf8))
        #expect(try AML.nameString("\\") == [0x5c, 0x00])
        for bad in ["", "TOOLONG", "1ABC", "a", "_SB..X"] {
            #expect(throws: ACPIError.self) { try AML.nameString(bad) }
        }
    }

    @Test func stringsAreNulTerminatedASCII() throws {
        #expect(try AML.string("LNRO0005").bytes == [0x0d] + Array("LNRO0005".utf8) + [0])
        #expect(throws: ACPIError.invalidString("é")) { try AML.string("é") }
    }

    @Test func namedObjectsAndPackages() throws {
        let s5 = try AML.name("\\_S5", .package([.integer(5), .zero, .zero, .zero]))
        #expect(s5.bytes == [0x08, 0x5c, 0x5f, 0x53, 0x35, 0x5f, 0x12, 0x07, 0x04, 0x0a, 0x05, 0x00, 0x00, 0x00])
        let device = try AML.device("RTC", [try .name("_UID", .one)])
        #expect(device.bytes == [0x5b, 0x82, 0x0b] + Array("RTC_".utf8) + [0x08] + Array("_UID".utf8) + [0x01])
        let method = try AML.method("_STA", arguments: 0, serialized: false, [.return(.integer(0x0f))])
        #expect(method.bytes == [0x14, 0x09] + Array("_STA".utf8) + [0x00, 0xa4, 0x0a, 0x0f])
        #expect(throws: ACPIError.invalidMethodArgumentCount(8)) { try AML.method("FOO", arguments: 8, []) }
        #expect(throws: ACPIError.packageTooLong(256)) {
            try AML.package(Array(repeating: .zero, count: 256))
        }
        // A scope big enough to need a two-byte PkgLength.
        let big = try AML.scope("\\_SB", Array(repeating: try .name("_UID", .one), count: 20))
        // 5 name bytes + 20 × 6 + 2 length bytes = 127 = 0x7f.
        #expect(Array(big.bytes.prefix(3)) == [0x10, 0x4f, 0x07])
        #expect(big.bytes.count == 1 + 2 + 5 + 120)
    }

    @Test func resourceDescriptors() throws {
        #expect(try AMLResource.io(minimum: 0x3f8, maximum: 0x3f8, alignment: 1, length: 8).encoded()
            == [0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08])
        #expect(try AMLResource.irqNoFlags(4).encoded() == [0x22, 0x10, 0x00])
        #expect(throws: ACPIError.legacyIRQOutOfRange(16)) { try AMLResource.irqNoFlags(16).encoded() }
        #expect(try AMLResource.memory32Fixed(writable: true, base: 0xd000_0000, length: 0x1000).encoded()
            == [0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00, 0xd0, 0x00, 0x10, 0x00, 0x00])
        #expect(try AMLResource.interrupt(trigger: .edge, polarity: .activeHigh, shared: false, [5]).encoded()
            == [0x89, 0x06, 0x00, 0x03, 0x01, 0x05, 0x00, 0x00, 0x00])
        #expect(try AMLResource.interrupt(trigger: .level, polarity: .activeLow, shared: true, [5]).encoded()[3] == 0x0d)
        #expect(throws: ACPIError.invalidInterruptCount(0)) {
            try AMLResource.interrupt(trigger: .edge, polarity: .activeHigh, shared: false, []).encoded()
        }
        let template = try AML.resourceTemplate([.irqNoFlags(4)])
        #expect(template.bytes == [0x11, 0x08, 0x0a, 0x05, 0x22, 0x10, 0x00, 0x79, 0x00])
    }
}
