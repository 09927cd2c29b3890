// What every libFuzzer target in Fuzz/ shares: starting libFuzzer's driver from the target's own
// entry point (SwiftPM links an executable's entry under the target's name, so libFuzzer's `main`
// is not the one that runs), turning its input into bytes, and, in a plain build, replaying a
// corpus (the files or folders named on the command line) as a regression test.
import Foundation

/// The bytes libFuzzer hands a target.
public func fuzzInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> [UInt8] {
    data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
}

#if FUZZING
@_silgen_name("LLVMFuzzerRunDriver")
func runFuzzerDriver(_ argc: UnsafeMutablePointer<Int32>,
                     _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
                     _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32

/// Runs libFuzzer with the process's arguments, calling `callback` with each input.
public func runFuzzer(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>,
                      _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32 {
    var count = argc
    var arguments = argv
    return runFuzzerDriver(&count, &arguments, callback)
}
#else
/// Runs `exercise` on every file named on the command line (or in a folder named there) and says
/// how many it replayed.
public func replayCorpus(_ exercise: ([UInt8]) -> Void) throws {
    var count = 0
    for path in CommandLine.arguments.dropFirst() {
        let url = URL(fileURLWithPath: path)
        let files = (try? FileManager.default.contentsOfDirectory(at: url, includingPropertiesForKeys: nil)) ?? [url]
        for file in files {
            exercise([UInt8](try Data(contentsOf: file)))
            count += 1
        }
    }
    print("replayed \(count) inputs")
}
#endif
