/// `a + b`, or `nil` on overflow (for file offsets and sizes read from untrusted images).
func loaderAdd(_ a: UInt64, _ b: UInt64) -> UInt64? {
    let (sum, overflow) = a.addingReportingOverflow(b)
    return overflow ? nil : sum
}
