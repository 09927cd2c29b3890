import ArgumentParser
import Logging
import Swiftlet
import Synchronization
import SwiftletHost

/// Where the default guest lives.
public enum DefaultGuest {
    /// `$SWIFTLET_GUEST_DIR`, else `$XDG_CACHE_HOME/swiftlet/guest`, else `$HOME/.cache/swiftlet/guest`.
    public static func directory(environment: [String: String]) -> String {
        if let dir = environment["SWIFTLET_GUEST_DIR"], !dir.isEmpty { return dir }
        if let cache = environment["XDG_CACHE_HOME"], !cache.isEmpty { return cache + "/swiftlet/guest" }
        return (environment["HOME"] ?? "/root") + "/.cache/swiftlet/guest"
    }

    static func exists(_ path: String) -> Bool { HostInfo.isReadableFile(path) }
}

/// The `swiftlet` program: parses arguments, runs, and maps the outcome to an exit status.
public enum SwiftletMain {
    /// Exit status for bad input.
    public static let usageError: Int32 = 2
    /// Exit status when the guest crashed or the host failed.
    public static let failure: Int32 = 1

    /// Runs `swiftlet` with `arguments` (without the program name) and returns the exit status.
    ///
    /// Termination signals are answered from the first line on: before the machine exists they end
    /// the process at once (status 128 + N); afterwards they stop the machine.
    public static func run(arguments: [String], startTime: ContinuousClock.Instant) -> Int32 {
        TerminationSignals.block()
        let session = Session()
        let io: EventLoopThread
        do {
            io = try EventLoopThread()
            try TerminationSignals.watch(on: io.loop) { session.terminate(by: $0) }
            try io.start()
        } catch {
            printError(error.description)
            return failure
        }
        let command: RunCommand
        do {
            var parsed = try SwiftletCommand.parseAsRoot(arguments)
            guard let run = parsed as? RunCommand else {
                guard !arguments.isEmpty else {
                    printError("no subcommand given; use `swiftlet run [OPTIONS] [-- CMD ARGS...]` (see `swiftlet --help`)")
                    return usageError
                }
                try parsed.run()          // `swiftlet help ...`: prints the help asked for
                return 0
            }
            command = run
        } catch {
            let code = SwiftletCommand.exitCode(for: error)
            if code == .success {
                print(SwiftletCommand.fullMessage(for: error))
                return 0
            }
            printError(SwiftletCommand.message(for: error))
            return usageError
        }
        return execute(command, session: session, io: io, startTime: startTime)
    }

    static func printError(_ message: String) {
        StandardError.write(MessageLogHandler.line(level: .error, message: message))
    }

    static func execute(_ command: RunCommand, session: Session, io: EventLoopThread,
                        startTime: ContinuousClock.Instant) -> Int32 {
        let level = Logger.Level(rawValue: command.logLevel) ?? .warning
        let logger = Logger(label: "swiftlet") { _ in MessageLogHandler(logLevel: level) }
        var environment: [String: String] = [:]
        for name in ["SWIFTLET_GUEST_DIR", "XDG_CACHE_HOME", "HOME"] { environment[name] = HostInfo.environment(name) }
        let machine: VirtualMachine
        let configuration: MachineConfiguration
        do {
            configuration = try command.machineConfiguration(environment: environment)
            machine = try VirtualMachine(configuration: configuration, logger: logger, startTime: startTime, io: io)
        } catch {
            printError(error.message)
            return error.kind == .usage ? usageError : failure
        }
        session.attach(machine)
        if configuration.console == .stdio || configuration.console == .virtio, let room = machine.consoleInputRoom {
            if Terminal.standardInputIsTerminal {
                // Raw mode hands Ctrl-C to the guest; the escape is seen as it is typed because
                // the reader never waits for the guest (input it does not read is dropped beyond
                // 64 KiB, as on a real line).
                Terminal.enterRawMode()
                let escape = Mutex(ConsoleEscape())
                StandardInputReader.start(on: io.loop, room: room) { bytes in
                    let (forward, quit) = escape.withLock { $0.filter(bytes) }
                    _ = machine.offerConsoleInput(forward)
                    if quit { machine.stop() }
                    return bytes.count
                }
            } else {
                // Piped input is never dropped: the reader stops reading while the guest's queue is full.
                StandardInputReader.start(on: io.loop, room: room) { bytes in machine.offerConsoleInput(bytes) }
            }
        }
        let outcome = machine.run()
        Terminal.restore()
        let (status, message) = exitStatus(for: outcome, signal: session.signal)
        if let message { printError(message) }
        return status
    }

    /// Maps how the machine ended to the process exit status (see `swiftlet run --help`) and, for
    /// failures, the one-line message to print.
    public static func exitStatus(for outcome: RunOutcome, signal: Int32?) -> (status: Int32, message: String?) {
        switch outcome.reason {
        case .requested:
            // A termination signal (128 + N), or the console's Ctrl-A x (0).
            return (signal.map { 128 + $0 } ?? 0, nil)
        case let reason where reason.isOrderly:
            // The command's status if the guest reported one; otherwise the guest powered off or
            // rebooted on purpose (perhaps the command itself did): success. Panics are not orderly.
            return (outcome.guestExitStatus.map(Int32.init) ?? 0, nil)
        case let reason:
            return (failure, reason.message)
        }
    }
}

/// What a termination signal acts on: the process while the machine is being built, then the
/// machine; and the last signal received.
final class Session: Sendable {
    private let state = Mutex<(machine: VirtualMachine?, signal: Int32?)>((nil, nil))

    /// From now on, signals stop `machine` instead of ending the process.
    func attach(_ machine: VirtualMachine) { state.withLock { $0.machine = machine } }

    /// The last termination signal received.
    var signal: Int32? { state.withLock { $0.signal } }

    /// Answers a termination signal (on the I/O loop's thread).
    func terminate(by signal: Int32) {
        let machine = state.withLock { state -> VirtualMachine? in
            state.signal = signal
            return state.machine
        }
        guard let machine else { TerminationSignals.exitNow(after: signal) }
        machine.stop()
    }
}
