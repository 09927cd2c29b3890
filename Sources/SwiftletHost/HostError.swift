import SystemPackage

/// A host call that failed: a thread, an eventfd, a signal handler. The message names the call.
public struct HostError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What Swiftlet was doing (`"starting thread swiftlet-console"`).
    public let what: String
    /// Why it failed.
    public let errno: Errno

    /// Creates an error for `what`, which failed with `errno`.
    public init(_ what: String, _ errno: Errno) {
        self.what = what
        self.errno = errno
    }

    public var description: String { "\(what) failed: \(errno)" }
}
