import IPVS

/// Chooses destination weights that make a scheduler give the canary its target share.
public enum WeightSolver {
    /// Solves the weights of one service for its scheduler.
    public static func solve(_ service: DesiredService) -> WeightAssignment {
        // Placeholder until the solver lands: every live endpoint at weight 1.
        var weights: [SocketAddress: Int32] = [:]
        for endpoint in service.stable + service.canary { weights[endpoint.address] = endpoint.state == .live ? 1 : 0 }
        let live = (service.stable + service.canary).filter { $0.state == .live }.count
        let canaryLive = service.canary.filter { $0.state == .live }.count
        return WeightAssignment(weights: weights, effectiveCanaryShare: live == 0 ? 0 : Double(canaryLive) / Double(live))
    }
}
