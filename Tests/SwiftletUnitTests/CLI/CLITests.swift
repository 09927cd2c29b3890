import ArgumentParser
import Testing
@testable import Swiftlet
@testable import SwiftletCLI
import SwiftletDispatcher

@Suite("CLI") struct CLITests {
    static let sizes: [(String, UInt64)] = [
        ("512M", 512 << 20), ("2G", 2 << 30), ("256", 256 << 20), ("64MiB", 64 << 20),
        ("4096K", 4 << 20), ("1T", 1 << 40), ("1g", 1 << 30),
    ]

    @Test(arguments: sizes)
    func sizesParse(text: String, bytes: UInt64) {
        #expect(ByteSize.parse(text) == bytes)
    }

    @Test(arguments: ["", "M", "-1G", "1.5G", "12X", "99999999999999999999G", "20000000T", "１G", "1 G",
                      "64iB", "64B", "64ib", "64MiBB", "-1"])
    func badSizesAreRefused(text: String) {
        #expect(ByteSize.parse(text) == nil)
    }

    @Test func runParsesEveryOptionAndTheCommandAfterTheTerminator() throws {
        let run = try RunCommand.parse(["--kernel", "/k", "--initrd", "/i", "--cpus", "4", "--memory", "1G",
                                        "--console", "off", "--", "sh", "-c", "exit 3"])
        #expect(run.kernel == "/k" && run.initrd == "/i" && run.cpus == 4 && run.memory == "1G")
        #expect(run.command == ["sh", "-c", "exit 3"])
        #expect(run.consoleConfiguration == .off)
        let machine = try run.machineConfiguration(environment: [:])
        #expect(machine.memorySize == 1 << 30)
        #expect(machine.vcpuCount == 4)
        #expect(machine.commandLine == "console=ttyS0 quiet loglevel=3 panic=-1 reboot=k pci=off swiftlet.cmd=" + "c2ggLWMgJ2V4aXQgMyc=")
        #expect(machine.entropy == false)
        #expect(try RunCommand.parse(["--kernel", "/k", "--rng"]).machineConfiguration(environment: [:]).entropy)
    }

    @Test func disksAreParsedInOrderWithDefaultIDs() throws {
        let run = try RunCommand.parse(["--kernel", "/k", "--disk", "/a.img", "--disk", "/b.img,ro",
                                        "--disk", "/c.img,id=scratch,ro", "--disk", "/d.img,ro,id=d-1.x"])
        let disks = try run.machineConfiguration(environment: [:]).disks
        #expect(disks == [DiskConfiguration(path: "/a.img", id: "vda"), DiskConfiguration(path: "/b.img", readOnly: true, id: "vdb"),
                          DiskConfiguration(path: "/c.img", readOnly: true, id: "scratch"),
                          DiskConfiguration(path: "/d.img", readOnly: true, id: "d-1.x")])
        let many = try RunCommand.parse(["--kernel", "/k"] + (0..<16).flatMap { ["--disk", "/\($0).img"] })
        #expect(try many.machineConfiguration(environment: [:]).disks.map(\.id).last == "vdp")
        #expect(try RunCommand.parse(["--kernel", "/k"]).machineConfiguration(environment: [:]).disks.isEmpty)
    }

    @Test(arguments: [(["--disk", "/a,rw"], "--disk '/a,rw': unknown option 'rw'; use ro or id=NAME"),
                      (["--disk", ",ro"], "--disk ',ro' has no image path"),
                      (["--disk", ""], "has no image path"),
                      (["--disk", "/a,id="], "id '' must be 1 to 20 letters"),
                      (["--disk", "/a,id=a,b"], "unknown option 'b'"),
                      (["--disk", "/a,id=\(String(repeating: "x", count: 21))"], "must be 1 to 20"),
                      (["--disk", "/a,id=x", "--disk", "/b,id=x"], "two disks have the id 'x'"),
                      (["--disk", "/a", "--disk", "/b,id=vda"], "two disks have the id 'vda'"),
                      ((0..<17).flatMap { ["--disk", "/\($0)"] }, "at most 16 disks")])
    func badDisksAreOneLineUsageErrors(arguments: [String], message: String) {
        do {
            _ = try SwiftletCommand.parseAsRoot(["run", "--kernel", "/k"] + arguments)
            Issue.record("accepted \(arguments)")
        } catch {
            #expect(SwiftletCommand.exitCode(for: error) != .success)
            let text = SwiftletCommand.message(for: error)
            #expect(text.contains(message), "\(text)")
            #expect(!text.contains("\n"))
        }
    }

    @Test func aNetworkCardIsParsedWithItsBackendAndMAC() throws {
        func network(_ spec: String) throws -> NetworkConfiguration? {
            try RunCommand.parse(["--kernel", "/k", "--net", spec]).machineConfiguration(environment: [:]).network
        }
        #expect(try network("tap=tap0") == NetworkConfiguration(backend: .tap("tap0"), mac: [6, 0, 0xac, 0x10, 0, 2]))
        #expect(try network("passt,mac=02:AB:cd:00:00:01") == NetworkConfiguration(backend: .passt, mac: [2, 0xab, 0xcd, 0, 0, 1]))
        #expect(try network("tap=\(String(repeating: "t", count: 15)),mac=0a:00:00:00:00:01")?.mac == [10, 0, 0, 0, 0, 1])
        #expect(try RunCommand.parse(["--kernel", "/k"]).machineConfiguration(environment: [:]).network == nil)
    }

    @Test(arguments: [("passt,mac=01:00:5e:00:00:01", "multicast or zero"), ("passt,mac=00:00:00:00:00:00", "multicast or zero"),
                      ("passt,mac=06:00:ac:10:00", "six hex pairs"), ("passt,mac=06:00:ac:10:00:2", "six hex pairs"),
                      ("passt,mac=06:00:ac:10:00:0g", "six hex pairs"), ("passt,mtu=9000", "unknown option 'mtu=9000'"),
                      ("tap=", "1 to 15 bytes"), ("tap=a/b", "without '/'"), ("tap=\(String(repeating: "t", count: 16))", "1 to 15"),
                      ("slirp", "use --net tap=NAME"), ("", "use --net tap=NAME")])
    func badNetworkCardsAreOneLineUsageErrors(spec: String, message: String) {
        do {
            _ = try SwiftletCommand.parseAsRoot(["run", "--kernel", "/k", "--net", spec])
            Issue.record("accepted \(spec)")
        } catch {
            #expect(SwiftletCommand.exitCode(for: error) != .success)
            let text = SwiftletCommand.message(for: error)
            #expect(text.contains(message), "\(text)")
            #expect(!text.contains("\n"))
        }
    }

    @Test(arguments: [["--cpus", "0"], ["--cpus", "-2"], ["--memory", "lots"], ["--memory", "0.5G"],
                      ["--log-level", "loud"], ["--console", ""], ["--bogus"]])
    func badFlagsAreUsageErrors(arguments: [String]) {
        #expect(throws: (any Error).self) { try RunCommand.parse(arguments) }
        do {
            _ = try SwiftletCommand.parseAsRoot(["run"] + arguments)
            Issue.record("accepted \(arguments)")
        } catch {
            #expect(SwiftletCommand.exitCode(for: error) != .success)
            #expect(!SwiftletCommand.message(for: error).isEmpty)
        }
    }

    @Test(arguments: [(["--memory", "-1"], "--memory '-1' is not a size"),
                      (["--cpus", "-1"], "--cpus -1: a machine needs at least 1 vCPU"),
                      (["--memory", "64iB"], "--memory '64iB' is not a size")])
    func negativeAndMalformedValuesAreNamedNotMissing(arguments: [String], message: String) {
        do {
            _ = try SwiftletCommand.parseAsRoot(["run"] + arguments)
            Issue.record("accepted \(arguments)")
        } catch {
            #expect(SwiftletCommand.exitCode(for: error) != .success)
            #expect(SwiftletCommand.message(for: error).contains(message), "\(SwiftletCommand.message(for: error))")
        }
    }

    @Test func theDefaultGuestIsFoundFromTheEnvironmentOrRefusedWithAFix() throws {
        #expect(DefaultGuest.directory(environment: ["SWIFTLET_GUEST_DIR": "/g"]) == "/g")
        #expect(DefaultGuest.directory(environment: ["XDG_CACHE_HOME": "/c", "HOME": "/h"]) == "/c/swiftlet/guest")
        #expect(DefaultGuest.directory(environment: ["HOME": "/h"]) == "/h/.cache/swiftlet/guest")
        let run = try RunCommand.parse(["--", "true"])
        #expect(throws: SwiftletError.self) { try run.machineConfiguration(environment: ["SWIFTLET_GUEST_DIR": "/nonexistent"]) }
        do {
            _ = try run.machineConfiguration(environment: ["SWIFTLET_GUEST_DIR": "/nonexistent"])
        } catch {
            #expect(error.kind == .usage)
            #expect(error.message.contains("scripts/build-guest"))
        }
    }

    @Test func theCommandReachesTheGuestBase64Encoded() throws {
        let run = try RunCommand.parse(["--cmdline", "console=ttyS0", "--", "uname", "-a"])
        #expect(run.kernelCommandLine == "console=ttyS0 swiftlet.cmd=dW5hbWUgLWE=")
        #expect(try RunCommand.parse([]).kernelCommandLine == RunCommand.defaultCommandLine)
    }

    @Test func consoleVirtioIsStdioThroughHvc0() throws {
        let run = try RunCommand.parse(["--console", "virtio", "--", "true"])
        #expect(run.consoleConfiguration == .virtio)
        #expect(run.kernelCommandLine == "console=hvc0 quiet loglevel=3 panic=-1 reboot=k pci=off swiftlet.cmd=dHJ1ZQ==")
        // --cmdline replaces the default whatever the console.
        #expect(try RunCommand.parse(["--console", "virtio", "--cmdline", "console=ttyS0"]).kernelCommandLine == "console=ttyS0")
        // Other values are files; ./virtio names a file called virtio.
        #expect(try RunCommand.parse(["--console", "./virtio"]).consoleConfiguration == .file("./virtio"))
    }

    @Test func theConsoleValuesAreListedInTheHelpAndTheError() {
        #expect(SwiftletCommand.helpMessage(for: RunCommand.self).contains("stdio|virtio|off|path"))
        do {
            _ = try SwiftletCommand.parseAsRoot(["run", "--console", ""])
            Issue.record("accepted an empty --console")
        } catch {
            #expect(SwiftletCommand.message(for: error) == "--console needs stdio, virtio, off or a file path")
        }
    }

    @Test func messagesAreOneLineInSwiftletsShape() {
        #expect(MessageLogHandler.line(level: .warning, message: "a\nb") == "swiftlet: warning: a; b\n")
        #expect(MessageLogHandler.line(level: .error, message: "x") == "swiftlet: error: x\n")
    }

    @Test func commandsAreQuotedForTheGuestShell() {
        #expect(shellQuote(["echo", "a b", "it's", ""]) == "echo 'a b' 'it'\\''s' ''")
        #expect(shellQuote(["uname", "-a"]) == "uname -a")
    }

    @Test func outcomesMapToExitStatuses() {
        func status(_ reason: StopReason, _ exit: UInt8?, signal: Int32? = nil) -> Int32 {
            SwiftletMain.exitStatus(for: RunOutcome(reason: reason, guestExitStatus: exit, bootCompleteAfter: nil),
                                    signal: signal).status
        }
        #expect(status(.powerOff, 3) == 3)
        #expect(status(.reset, 0) == 0)
        #expect(status(.reset, nil) == 0)
        #expect(status(.powerOff, nil) == 0)
        #expect(status(.guestPanic, nil) == 1)
        #expect(status(.guestPanic, 0) == 1)
        #expect(status(.tripleFault(vcpu: 0, state: "s"), 0) == 1)
        #expect(status(.requested, nil, signal: 2) == 130)
        #expect(status(.requested, nil) == 0)
        let panic = SwiftletMain.exitStatus(for: RunOutcome(reason: .guestPanic, guestExitStatus: nil, bootCompleteAfter: nil),
                                            signal: nil)
        #expect(panic.message == "the guest kernel panicked (see the console output above)")
        #expect(SwiftletMain.exitStatus(for: RunOutcome(reason: .powerOff, guestExitStatus: 0, bootCompleteAfter: nil),
                                        signal: nil).message == nil)
    }
}

@Suite("Console escape") struct ConsoleEscapeTests {
    @Test func ctrlAXQuitsAndCtrlACtrlASendsOneCtrlA() {
        var escape = ConsoleEscape()
        #expect(escape.filter(Array("ls\n".utf8)) == (Array("ls\n".utf8), false))
        #expect(escape.filter([0x61, 0x01, 0x01, 0x62]) == ([0x61, 0x01, 0x62], false))
        #expect(escape.filter([0x01, 0x63]) == ([0x01, 0x63], false))
        #expect(escape.filter([0x64, 0x01]) == ([0x64], false))      // escape split across reads
        #expect(escape.filter(Array("x".utf8)) == ([], true))
        var other = ConsoleEscape()
        #expect(other.filter([0x65, 0x01, 0x58, 0x66]) == ([0x65], true))
    }
}
