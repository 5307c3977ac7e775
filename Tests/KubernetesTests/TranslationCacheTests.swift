import CanaryCore
import IPVS
import KubernetesClient
import Testing

@_spi(Benchmarks) @testable import KubernetesSource

/// The cache that translates only what a change touches gives, after every change, exactly what
/// translating the whole cluster gives: over random sequences of Service, slice and Node changes
/// (canaries named and renamed, address conflicts, bad annotations, relists), and Gateway API routes
/// (weights changed, backends missing, L7 rules refused, routes of two kinds on one parent).
@Suite("Incremental translation")
struct TranslationCacheTests {
    /// A small deterministic generator (SplitMix64), so that a failing seed can be replayed.
    struct Generator: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    static let names = (0..<6).map { "svc-\($0)" }

    static func randomService(_ name: String, _ random: inout Generator) throws -> Service {
        var annotations: [String: String] = [:]
        if Bool.random(using: &random) {
            annotations["canary-agent.io/canary-service"] = names.randomElement(using: &random)!
            annotations["canary-agent.io/canary-weight"] = ["10", "25", "50", "100", "10", "25", "abc"].randomElement(using: &random)!
        }
        if Int.random(in: 0..<4, using: &random) == 0 {
            annotations["canary-agent.io/scheduler"] = ["sh", "rr", "mh", "bogus"].randomElement(using: &random)!
        }
        let labels = Int.random(in: 0..<4, using: &random) == 0 ? [:] : Fixtures.proxyLabel
        // Few addresses for many Services: conflicts happen.
        let address = "10.96.0.\(Int.random(in: 1...10, using: &random))"
        return try Fixtures.decode(
            Fixtures.service(name, clusterIPs: [address], labels: labels, annotations: annotations), as: Service.self)
    }

    static func randomSlice(_ index: Int, _ random: inout Generator) throws -> EndpointSlice {
        let service = names.randomElement(using: &random)!
        let endpoints = (0..<Int.random(in: 0...3, using: &random)).map { _ in
            Fixtures.endpoint("10.244.\(Int.random(in: 1...2, using: &random)).\(Int.random(in: 1...9, using: &random))")
        }
        return try Fixtures.decode(Fixtures.slice("slice-\(index)", service: service, endpoints: endpoints), as: EndpointSlice.self)
    }

    static func randomRoute(_ random: inout Generator) throws -> (RouteRef, Route) {
        let kind: RouteKind = Bool.random(using: &random) ? .tcp : .http
        let parent = names.randomElement(using: &random)!
        let backends = (0..<Int.random(in: 1...3, using: &random)).map { _ in
            RouteFixtures.backend(
                // Now and then a Service that does not exist.
                Int.random(in: 0..<8, using: &random) == 0 ? "missing" : names.randomElement(using: &random)!,
                weight: [0, 1, 10, 90, 1000].randomElement(using: &random)!)
        }
        let header: JSON = ["headers": [["name": "x", "value": "y"]]]
        let json = RouteFixtures.route(
            kind, "route-\(Int.random(in: 0..<3, using: &random))", parent: parent, backends: backends,
            matches: kind == .http && Int.random(in: 0..<6, using: &random) == 0 ? [header] : nil,
            created: "2026-12-0\(Int.random(in: 1...3, using: &random))T00:00:00Z")
        return try RouteFixtures.decoded(json)
    }

    @Test("after every change the incremental translation equals the full one", arguments: 1...24)
    func equalsFullTranslation(seed: UInt64) throws {
        var random = Generator(state: seed)
        var cache = TranslationCache(endpointsAPI: .endpointSlices, defaultScheduler: .weightedRoundRobin)
        var services: [ObjectKey: Service] = [:]
        var slices: [ObjectKey: EndpointSlice] = [:]
        var node: Node? = try Fixtures.decode(Fixtures.node(), as: Node.self)
        var routes: [RouteRef: Route] = [:]
        for name in Self.names.prefix(3) {
            let service = try Self.randomService(name, &random)
            services[service.key] = service
        }
        cache.replaceServices(services)
        cache.replaceSlices(slices)
        cache.setNode(node)
        var reference = Translation(desiredState: DesiredState(), problems: [])
        // What a consumer of the cache's changes holds: it must always equal a full translation.
        var folded = DesiredState()
        for step in 0..<120 {
            switch Int.random(in: 0..<24, using: &random) {
            case 0..<8:
                let name = Self.names.randomElement(using: &random)!
                let key = ObjectKey(namespace: "default", name: name)
                if services[key] != nil, Int.random(in: 0..<4, using: &random) == 0 {
                    services[key] = nil
                    cache.changeService(key, to: nil)
                } else {
                    let service = try Self.randomService(name, &random)
                    services[key] = service
                    cache.changeService(key, to: service)
                }
            case 8..<17:
                let index = Int.random(in: 0..<8, using: &random)
                let key = ObjectKey(namespace: "default", name: "slice-\(index)")
                if slices[key] != nil, Int.random(in: 0..<3, using: &random) == 0 {
                    slices[key] = nil
                    cache.changeSlice(key, to: nil)
                } else {
                    let slice = try Self.randomSlice(index, &random)
                    slices[key] = slice
                    cache.changeSlice(key, to: slice)
                }
            case 17:
                node = try Fixtures.decode(
                    Fixtures.node(labels: ["canary-agent.io/scheduler": ["sh", "rr", "wrr", "nope"].randomElement(using: &random)!]),
                    as: Node.self)
                cache.setNode(node)
            case 18:
                cache.replaceServices(services)
            case 20..<23:
                let (ref, route) = try Self.randomRoute(&random)
                if routes[ref] != nil, Int.random(in: 0..<4, using: &random) == 0 {
                    routes[ref] = nil
                    cache.changeRoute(ref.kind, ObjectKey(namespace: ref.namespace, name: ref.name), to: nil)
                } else {
                    routes[ref] = route
                    cache.changeRoute(ref.kind, ObjectKey(namespace: ref.namespace, name: ref.name), to: route)
                }
            default:
                break  // nothing changed: an empty translation
            }
            let (changes, problems) = cache.translate()
            let changed = folded.apply(.update(changes))
            reference = Translator.translate(
                TranslationInput(
                    services: Array(services.values), endpoints: .slices(Array(slices.values)), node: node,
                    defaultScheduler: .weightedRoundRobin, routes: routes),
                previous: reference.desiredState)
            #expect(folded == reference.desiredState, "seed \(seed), step \(step)")
            #expect(problems == reference.problems, "seed \(seed), step \(step)")
            // Every change the cache names is a real one: nothing is sent twice.
            #expect(changed.count == changes.count, "seed \(seed), step \(step)")
        }
        // The incremental path is taken, not only the full one.
        #expect(cache.incrementalTranslations >= 5, "seed \(seed): \(cache.incrementalTranslations) incremental translations")
    }
}
