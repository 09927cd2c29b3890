import Testing
@Test func kvmPlaceholder() { #expect(Bool(true)) }
