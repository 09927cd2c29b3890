import SwiftletCLI
#if canImport(Glibc)
import Glibc
#endif

let start = ContinuousClock.now
exit(SwiftletMain.run(arguments: Array(CommandLine.arguments.dropFirst()), startTime: start))
