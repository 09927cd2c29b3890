import SwiftletCore
#if canImport(Glibc)
import Glibc
#endif
import SwiftletArch
import SwiftletBoot
import SwiftletMemory
import SystemPackage
import Testing

/// Checks the loader against the real Debian cloud kernel that `scripts/build-guest` fetches.
///
/// The kernel is looked up at `$SWIFTLET_GUEST_DIR/vmlinuz` (default `$HOME/.cache/swiftlet/guest/vmlinuz`).
/// Without it the test fails: it never skips.
@Suite("Loader on the Debian kernel") struct DebianKernelLoaderTests {
    static var kernelPath: String {
        if let directory = getenv("SWIFTLET_GUEST_DIR") { return String(cString: directory) + "/vmlinuz" }
        let home = getenv("HOME").map { String(cString: $0) } ?? "/root"
        return home + "/.cache/swiftlet/guest/vmlinuz"
    }

    @Test func parsesAndLoadsTheDebianBzImage() throws {
        let path = Self.kernelPath
        let prefix: [UInt8]
        do {
            prefix = try LoaderFixtures.readPrefix(of: path, count: BzImageHeader.bytesNeeded)
        } catch {
            Issue.record("no guest kernel at \(path) (\(error)): run scripts/build-guest, or set SWIFTLET_GUEST_DIR to a directory with vmlinuz")
            return
        }
        let descriptor = try FileDescriptor.open(FilePath(path), .readOnly)
        let fileSize = UInt64(try descriptor.seek(offset: 0, from: .end))
        try descriptor.close()

        let header = try BzImageHeader.parse(prefix, fileSize: fileSize, path: path)
        #expect(header.version >= 0x020f, "boot protocol \(header.versionString)")
        #expect(header.hasKernel64Entry)
        #expect(header.isRelocatable)
        #expect(header.canBeLoadedAbove4G)
        #expect(header.commandLineSize >= 2047)
        let footprint = try #require(header.footprintEnd(loadAddress: X86Layout.kernelAddress))
        #expect(footprint < 256 << 20)

        let memory = try LoaderFixtures.memory(size: 256 << 20)
        let lowRAMEnd: UInt64 = 256 << 20
        let initrd = LoaderFixtures.pseudoRandomBytes(64 << 10, seed: 77)
        let entry = try LoaderFixtures.withTemporaryFile(initrd) { initrdPath in
            try KernelLoader.load(kernelPath: path, initrdPath: initrdPath, commandLine: "console=ttyS0 panic=-1",
                                  memory: memory, e820: LoaderFixtures.e820(lowRAMEnd: lowRAMEnd),
                                  rsdpAddress: X86Layout.acpiTablesAddress, lowRAMEnd: lowRAMEnd)
        }
        #expect(entry == .linux64(entry: 0x10_0200, bootParams: 0x7000))

        // The protected-mode code starts right after the setup sectors in the file.
        let setupAndCode = try LoaderFixtures.readPrefix(of: path, count: Int(header.setupSize) + 4096)
        #expect(try memory.read(count: 4096, at: GuestAddress(0x10_0000)) == Array(setupAndCode.suffix(4096)))
        let page = try memory.read(count: 4096, at: GuestAddress(0x7000))
        #expect(Array(page[0x202..<0x206]) == Array("HdrS".utf8))
        #expect(page[0x210] == 0xff)
        #expect(page[0x211] & 0x81 == 0x81)
        let initrdAddress = UInt64(page.loadLittleEndian(UInt32.self, at: 0x218))
        #expect(initrdAddress == lowRAMEnd - (64 << 10))
        #expect(initrdAddress >= footprint)
        #expect(page.loadLittleEndian(UInt32.self, at: 0x21c) == 64 << 10)
        #expect(try memory.read(count: initrd.count, at: GuestAddress(initrdAddress)) == initrd)
    }
}
