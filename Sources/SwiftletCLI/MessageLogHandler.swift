import Logging
import SwiftletHost

/// Writes log messages to standard error as `swiftlet: LEVEL: message`, one line each, in the
/// same shape as Swiftlet's `swiftlet: error:` lines (swift-log's stream handler prefixes a
/// timestamp and the source module, which a user running one command does not need).
struct MessageLogHandler: LogHandler {
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        StandardError.write(Self.line(level: event.level, message: event.message.description))
    }

    /// The line written for `message` at `level`, newlines folded so that it stays one line.
    static func line(level: Logger.Level, message: String) -> String {
        "swiftlet: \(level): " + message.split(separator: "\n").joined(separator: "; ") + "\n"
    }
}
