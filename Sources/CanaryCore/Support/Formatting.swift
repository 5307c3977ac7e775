import IPVS

extension Scheduler {
    /// The schedulers a Service, a Node, the static file and `--scheduler` may name: those whose
    /// split the solver models (see `WeightSolver`).
    public static let supportedByAgent: [Scheduler] = [.sourceHashing, .roundRobin, .weightedRoundRobin, .maglevHashing]

    /// "sh, rr, wrr or mh", for messages.
    public static var supportedList: String {
        let names = supportedByAgent.map(\.rawValue)
        return names.dropLast().joined(separator: ", ") + " or " + (names.last ?? "")
    }
}

/// A share (0 … 1) as a percentage for people: `percentText(0.1) == "10%"`,
/// `percentText(0.101562) == "10.1562%"`, `percentText(0.1, decimals: 2...2) == "10.00%"`.
/// Rounded to the most decimals; trailing zeros dropped down to the fewest.
public func percentText(_ fraction: Double, decimals: ClosedRange<Int> = 0...4) -> String {
    var scale = 1
    for _ in 0..<decimals.upperBound { scale *= 10 }
    let scaled = Int((fraction * 100 * Double(scale)).rounded())
    let whole = scaled / scale
    var digits = decimals.upperBound == 0 ? "" : String(scaled % scale)
    while digits.count < decimals.upperBound { digits = "0" + digits }
    while digits.count > decimals.lowerBound, digits.hasSuffix("0") { digits.removeLast() }
    return digits.isEmpty ? "\(whole)%" : "\(whole).\(digits)%"
}
