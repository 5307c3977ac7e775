import Testing

@testable import CanaryAgent

/// The command line's durations: out-of-range and non-finite numbers are refused with one line
/// naming the flag (a trap converting `inf` to Int64, or a full sync with no pause, before).
@Suite("Reconciler settings from the command line")
struct SettingsTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var drift: Double, window: Int, drain: Double
        var refusedFlag: String?
        var testDescription: String { "drift \(drift), window \(window), drain \(drain)" }
    }

    @Test(
        "out-of-range values are refused, naming the flag",
        arguments: [
            Case(drift: .infinity, window: 10, drain: 300, refusedFlag: "--drift-check-interval"),
            Case(drift: 1e300, window: 10, drain: 300, refusedFlag: "--drift-check-interval"),
            Case(drift: .nan, window: 10, drain: 300, refusedFlag: "--drift-check-interval"),
            Case(drift: 0.0000001, window: 10, drain: 300, refusedFlag: "--drift-check-interval"),
            Case(drift: 0, window: 10, drain: 300, refusedFlag: "--drift-check-interval"),
            Case(drift: -5, window: 10, drain: 300, refusedFlag: "--drift-check-interval"),
            Case(drift: 30, window: -1, drain: 300, refusedFlag: "--sync-window-ms"),
            Case(drift: 30, window: 10_001, drain: 300, refusedFlag: "--sync-window-ms"),
            Case(drift: 30, window: 10, drain: 1e19, refusedFlag: "--drain-timeout"),
            Case(drift: 30, window: 10, drain: -.infinity, refusedFlag: "--drain-timeout"),
            Case(drift: 30, window: 10, drain: -0.5, refusedFlag: "--drain-timeout"),
        ])
    func refused(_ input: Case) {
        #expect {
            _ = try Reconciler.Settings(
                driftCheckIntervalSeconds: input.drift, syncWindowMilliseconds: input.window, drainTimeoutSeconds: input.drain)
        } throws: { error in
            guard let error = error as? Reconciler.SettingsError else { return false }
            return error.flag == input.refusedFlag && !error.description.contains("\n")
                && error.description.hasPrefix("\(input.refusedFlag!): ")
        }
    }

    @Test("values in range become those durations")
    func accepted() throws {
        let settings = try Reconciler.Settings(driftCheckIntervalSeconds: 2.5, syncWindowMilliseconds: 0, drainTimeoutSeconds: 0)
        #expect(settings.driftCheckInterval == .milliseconds(2500))
        #expect(settings.syncWindow == .zero)
        #expect(settings.drainTimeout == .zero)
        let longest = try Reconciler.Settings(driftCheckIntervalSeconds: 86_400, syncWindowMilliseconds: 10_000, drainTimeoutSeconds: 604_800)
        #expect(longest.driftCheckInterval == .seconds(86_400))
        #expect(longest.drainTimeout == .seconds(604_800))
    }
}
