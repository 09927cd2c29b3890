// libFuzzer target: a hostile user's command line.
//
// The input is split at NUL bytes into arguments (invalid UTF-8 is repaired, as the process's
// arguments would be). Every argument goes to the option-value parsers Swiftlet wrote itself
// (ByteSize for --memory, the --disk, --net and --vsock specs), which must never trap and must
// only return values that hold their invariants. An input whose first byte is 0xff is instead a
// whole `swiftlet` command line (without the program name) for swift-argument-parser and
// RunCommand's validation and `machineConfiguration`, which must end in a configuration or one
// usage line, never anything else: no guest is booted and no file is opened (the default guest
// directory does not exist, so it stops at that check, after the option parsers). That path is
// about 100 times slower, so the fuzzer reaches it only when it keeps the prefix. Built by
// scripts/fuzz with -sanitize=fuzzer; a plain build replays the corpus (in CI).
import FuzzSupport
import Swiftlet
import SwiftletCLI

func exercise(_ input: [UInt8]) {
    let wholeCommandLine = input.first == 0xff
    let arguments = input.dropFirst(wholeCommandLine ? 1 : 0).split(separator: 0, omittingEmptySubsequences: false)
        .map { String(decoding: $0, as: UTF8.self) }
    guard wholeCommandLine else {
        parseValues(arguments)
        return
    }
    guard let command = try? SwiftletCommand.parseAsRoot(arguments), let run = command as? RunCommand else { return }
    do {
        _ = try run.machineConfiguration(environment: ["SWIFTLET_GUEST_DIR": "/nonexistent/swiftlet-fuzz"])
    } catch {
        precondition(error.kind == .usage && !error.message.isEmpty && !error.message.contains("\n"),
                     "a configuration error that is not one usage line")
    }
}

/// Gives every argument to Swiftlet's own option-value parsers.
func parseValues(_ arguments: [String]) {
    for (index, argument) in arguments.enumerated() {
        if let bytes = ByteSize.parse(argument) { precondition(bytes > 0 || argument.first == "0", "a size from nothing") }
        if let disk = try? RunCommand.parseDisk(argument, index: index) {
            precondition(!disk.path.isEmpty && !disk.path.contains(","), "a disk path with a comma or none")
            precondition((1...20).contains(disk.id.utf8.count), "a disk id the guest cannot read back")
        }
        if let network = try? RunCommand.parseNetwork(argument) {
            precondition(network.mac.count == 6 && network.mac[0] & 1 == 0, "a MAC that is not unicast")
            if case let .tap(name) = network.backend { precondition((1...15).contains(name.utf8.count), "a TAP name Linux refuses") }
        }
        if let vsock = try? RunCommand.parseVsock(argument) {
            precondition(vsock.cid >= 3 && vsock.cid < UInt32.max && !vsock.socketPath.isEmpty, "a reserved CID or no socket")
        }
    }
}

#if FUZZING
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    exercise(fuzzInput(data, size))
    return 0
}

/// This target's entry point (see FuzzSupport).
@_cdecl("FuzzCommandLine_main")
public func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int32 {
    runFuzzer(argc, argv, fuzzOne)
}
#else
@main enum Replay {
    static func main() throws { try replayCorpus(exercise) }
}
#endif
