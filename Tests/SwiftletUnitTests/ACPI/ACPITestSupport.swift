import Foundation
import Testing
@testable import SwiftletBoot

/// Little-endian reads from table bytes.
extension Collection where Element == UInt8, Index == Int {
    func le<T: FixedWidthInteger & UnsignedInteger>(_ offset: Int, as: T.Type = T.self) -> T {
        var value: T = 0
        for index in 0..<(T.bitWidth / 8) { value |= T(self[startIndex + offset + index]) << (8 * index) }
        return value
    }

    func ascii(_ offset: Int, _ count: Int) -> String {
        String(decoding: self[(startIndex + offset)..<(startIndex + offset + count)], as: UTF8.self)
    }

    var byteSum: UInt8 { reduce(0, &+) }
}

/// Runs `iasl -d` on ACPI tables and hands back the disassembly.
enum IASL {
    struct Result {
        var status: Int32
        var output: String
        var disassembly: String
        /// The AML `iasl -oa` compiled back from the disassembly, when asked for.
        var recompiled: [UInt8]?
    }

    /// Whether iasl's output reports an error (its compiler summary's "0 Errors" does not count).
    static func reportsError(_ output: String) -> Bool {
        output.replacingOccurrences(of: " 0 Errors", with: "").contains("Error")
    }

    /// The `iasl` executable on PATH, or nil.
    static func executable() -> URL? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for directory in path.split(separator: ":").map(String.init) + ["/usr/bin", "/usr/local/bin"] {
            let candidate = URL(fileURLWithPath: directory + "/iasl")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        }
        return nil
    }

    /// Writes `table` to `NAME.dat` in a fresh directory and disassembles it; with `recompile`, also
    /// compiles the disassembly back without optimizations. Records a failure (never a skip) when
    /// iasl is missing.
    static func disassemble(_ table: some Collection<UInt8>, name: String, recompile: Bool = false,
                            sourceLocation: SourceLocation = #_sourceLocation) throws -> Result {
        let iasl = try #require(executable(), "install acpica-tools (iasl)", sourceLocation: sourceLocation)
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("swiftlet-acpi-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let input = directory.appendingPathComponent("\(name).dat")
        try Data(table).write(to: input)

        var (status, output) = try run(iasl, ["-d", "\(name).dat"], in: directory)
        let disassembly = (try? String(contentsOf: directory.appendingPathComponent("\(name).dsl"), encoding: .utf8)) ?? ""
        var recompiled: [UInt8]?
        if recompile, status == 0 {
            let (compileStatus, compileOutput) = try run(iasl, ["-oa", "\(name).dsl"], in: directory)
            status = compileStatus
            output += compileOutput
            recompiled = (try? Data(contentsOf: directory.appendingPathComponent("\(name).aml"))).map { Array($0) }
        }
        return Result(status: status, output: output, disassembly: disassembly, recompiled: recompiled)
    }

    /// Runs `executable` with `arguments` in `directory`; returns the exit status and the combined output.
    private static func run(_ executable: URL, _ arguments: [String], in directory: URL) throws -> (Int32, String) {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        process.currentDirectoryURL = directory
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: output, as: UTF8.self))
    }
}
