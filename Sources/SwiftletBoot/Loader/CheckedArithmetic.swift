/// `value` rounded up to a multiple of `alignment` (a power of two), or `nil` on overflow.
func loaderAlignUp(_ value: UInt64, _ alignment: UInt64) -> UInt64? {
    let (bumped, overflow) = value.addingReportingOverflow(alignment - 1)
    return overflow ? nil : bumped & ~(alignment - 1)
}

/// `a + b`, or `nil` on overflow.
func loaderAdd(_ a: UInt64, _ b: UInt64) -> UInt64? {
    let (sum, overflow) = a.addingReportingOverflow(b)
    return overflow ? nil : sum
}
