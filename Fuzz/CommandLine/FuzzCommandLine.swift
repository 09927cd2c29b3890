// libFuzzer target: a hostile user's command line.
//
// The input is split at NUL bytes into arguments (invalid UTF-8 is repaired, as the process's
// arguments would be); "run" is put in front unless the first byte is 0xff, so most inputs reach
// `swiftlet run`'s options (--memory sizes, --disk specs, --console, --cpus, the command after --).
// Parsing and validation must never trap, and a command line that parses must turn into a machine
// configuration or a usage error, never anything else: no guest is booted, no file is opened (the
// default guest directory does not exist, so `machineConfiguration` stops at its check, after the
// option parsers). Every argument is also given to ByteSize and the --disk parser directly.
// Built by scripts/fuzz with -sanitize=fuzzer; a plain build replays the corpus (in CI).
import FuzzSupport
import Swiftlet
import SwiftletCLI

func exercise(_ input: [UInt8]) {
    var arguments = input.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
    if input.first == 0xff { arguments.removeFirst() } else { arguments.insert("run", at: 0) }
    for (index, argument) in arguments.enumerated() {
        if let bytes = ByteSize.parse(argument) { precondition(bytes > 0 || argument.first == "0", "a size from nothing") }
        if let disk = try? RunCommand.parseDisk(argument, index: index) {
            precondition(!disk.path.isEmpty && !disk.path.contains(","), "a disk path with a comma or none")
            precondition((1...20).contains(disk.id.utf8.count), "a disk id the guest cannot read back")
        }
    }
    guard let command = try? SwiftletCommand.parseAsRoot(arguments), let run = command as? RunCommand else { return }
    do {
        _ = try run.machineConfiguration(environment: ["SWIFTLET_GUEST_DIR": "/nonexistent/swiftlet-fuzz"])
    } catch {
        precondition(error.kind == .usage && !error.message.isEmpty && !error.message.contains("\n"),
                     "a configuration error that is not one usage line")
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
