import IPVS
import PropertyBased
import Testing

@testable import CanaryCore

@Suite("Kernel hashes")
struct KernelHashTests {
    /// The SipHash round and key schedule, checked against the reference SipHash-2-4 vectors
    /// (key 00 01 … 0f, messages 00 01 … of length 0 and 15) from the SipHash paper.
    @Test(arguments: [(0, UInt64(0x726f_db47_dd0e_0e31)), (15, 0xa129_ca61_49be_45e5), (8, 0x93f5_f579_9a93_2462)])
    func sipHashReferenceVectors(length: Int, expected: UInt64) {
        let key = KernelHash.Key(0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908)
        #expect(KernelHash.siphash24((0..<length).map { UInt8($0) }, key: key) == expected)
    }

    @Test(arguments: [
        (UInt32(0), 8, UInt32(0)), (1, 8, 0x61), (2, 8, 0xC3), (0xFFFF_FFFF, 8, 0x9E), (1, 32, 0x61C8_8647),
    ])
    func hash32TakesTheTopBitsOfTheGoldenRatioProduct(value: UInt32, bits: Int, expected: UInt32) {
        #expect(KernelHash.hash32(value, bits: bits) == expected)
    }

    @Test func ipv6FoldsTheFourWords() throws {
        let address = try #require(IPAddress("2001:db8::1:0:0:2"))
        #expect(KernelHash.foldedAddress(address) == 0x2001_0db8 ^ 0 ^ 0x0001_0000 ^ 0x0000_0002)
        let v4 = try #require(IPAddress("10.0.0.1"))
        #expect(KernelHash.foldedAddress(v4) == 0x0A00_0001)
    }
}

@Suite("wrr model")
struct WeightedRoundRobinModelTests {
    /// One cycle of 4:4:4:3 in list order (the canary last): three passes pick everyone but the
    /// first, where the canary's 3 is below cw = 4.
    @Test func replaysTheKernelOrderOverOneCycle() {
        var model = WeightedRoundRobinModel(weights: [4, 4, 4, 3])
        #expect(model.schedule(15) == [0, 1, 2, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3])
        #expect(model.cycleLength == 15)
        // The next cycle is the same.
        #expect(model.schedule(15) == [0, 1, 2, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3])
    }

    @Test(arguments: [
        [4, 4, 4, 3], [9, 1], [1, 1, 1], [6, 4], [2667, 2667, 2667, 2000], [5, 0, 3], [12, 2, 2, 1, 7], [100, 1],
    ])
    func everyDestinationGetsItsWeightOverGcdPerCycle(weights: [Int]) {
        var model = WeightedRoundRobinModel(weights: weights)
        let divisor = WeightedRoundRobinModel.gcdOfPositive(weights)
        let cycle = model.cycleLength
        #expect(cycle == weights.reduce(0, +) / divisor)
        for _ in 0..<2 {
            let chosen = model.schedule(cycle)
            for index in weights.indices {
                #expect(chosen.filter { $0 == index }.count == weights[index] / divisor)
            }
        }
    }

    /// 2667:2667:2667:2000 on a fresh service gives the canary nothing in the first
    /// 1,024 connections; programmed at weight 1 and then edited to those weights, the canary gets
    /// exactly 1 (the pass at cw = 1 that was under way), as measured on the real kernel.
    @Test func largeWeightsDelayTheCanary() {
        var fresh = WeightedRoundRobinModel(weights: [2667, 2667, 2667, 2000])
        #expect(fresh.schedule(1024).filter { $0 == 3 }.isEmpty)

        var edited = WeightedRoundRobinModel(weights: [1, 1, 1, 1])
        for (index, weight) in [2667, 2667, 2667, 2000].enumerated() { edited.update(index: index, weight: weight) }
        #expect(edited.schedule(1024).filter { $0 == 3 }.count == 1)

        var small = WeightedRoundRobinModel(weights: [4, 4, 4, 3])
        #expect(small.schedule(1024).filter { $0 == 3 }.count == 204)
    }

    /// Adding destinations one by one puts each at the head of the list, and each add runs
    /// `ip_vs_wrr_dest_changed`: the first add set cw to 4 - (4 - 1) = 1 (gcd 4), and later adds
    /// keep it, so the first pass picks everyone; only then does cw restart at 4.
    @Test func programmedServicesListTheLastAddedFirst() {
        var model = WeightedRoundRobinModel.programmed(addOrder: [4, 4, 4, 3])
        #expect(model.weights == [3, 4, 4, 4])
        #expect(model.currentWeight == 1)
        #expect(model.schedule(7) == [0, 1, 2, 3, 1, 2, 3])
    }

    @Test func noPositiveWeightSchedulesNothing() {
        var model = WeightedRoundRobinModel(weights: [0, 0])
        #expect(model.next() == nil)
        var empty = WeightedRoundRobinModel(weights: [])
        #expect(empty.next() == nil)
    }

    @Test func propertyCycleCountsMatchWeights() async {
        await propertyCheck(input: Gen.int(in: 0...12).array(of: 1...6)) { weights in
            var model = WeightedRoundRobinModel(weights: weights)
            guard weights.contains(where: { $0 > 0 }) else {
                #expect(model.next() == nil)
                return
            }
            let divisor = WeightedRoundRobinModel.gcdOfPositive(weights)
            let chosen = model.schedule(model.cycleLength)
            #expect(chosen.count == model.cycleLength)
            for index in weights.indices {
                #expect(chosen.filter { $0 == index }.count == weights[index] / divisor)
            }
        }
    }
}

@Suite("sh model")
struct SourceHashingModelTests {
    /// Measured on the kernel: 9 stable at 90 and 1 canary at 10, the canary most recently added
    /// (first in the list): the canary takes 10 buckets (3.9 %), three stable ones take 90, 90 and
    /// 66, and six stable ones get none.
    @Test func weightsPast256StarveTheEndOfTheList() {
        let model = SourceHashingModel(weights: [10] + Array(repeating: 90, count: 9))
        #expect(model.heldBuckets == [10, 90, 90, 66, 0, 0, 0, 0, 0, 0])
        #expect(model.servedBuckets(fallback: true) == model.heldBuckets)
    }

    @Test(arguments: [
        ([1, 2], [86, 170]), ([3, 1], [192, 64]), ([128, 128], [128, 128]), ([1, 1, 1], [86, 85, 85]),
        ([0, 1], [128, 128]), ([255, 1, 1], [255, 1, 0]),
    ])
    func bucketsFillInListOrderAndWrap(weights: [Int], held: [Int]) {
        #expect(SourceHashingModel(weights: weights).heldBuckets == held)
    }

    /// A weight-0 destination keeps its bucket; with sh-fallback its clients go to the first
    /// available destination from bucket 2b on, without it they are refused.
    @Test func fallbackWalksFromTwiceTheBucket() {
        // Buckets alternate 0,1,0,1,… (weights 1 and 0): bucket b holds b % 2.
        let model = SourceHashingModel(weights: [1, 0])
        #expect(model.destination(ofBucket: 1, fallback: false) == nil)
        #expect(model.destination(ofBucket: 1, fallback: true) == 0)
        #expect(model.servedBuckets(fallback: true) == [256, 0])
        #expect(model.servedBuckets(fallback: false) == [128, 0])

        // Weights [2, 0, 254] put destination 1 on bucket 2 only. Bucket 2 falls back from bucket
        // 4 (destination 2); bucket 129 would start at 2 * 129 & 255 = 2, then 3: destination 2.
        let shifted = SourceHashingModel(weights: [2, 0, 254])
        #expect(shifted.buckets[2] == 1)
        #expect(shifted.destination(ofBucket: 2, fallback: true) == 2)
        let first = SourceHashingModel(weights: [0, 1, 255])
        // Bucket 0 holds the weight-0 destination; 2 * 0 = 0, then bucket 1: destination 1.
        #expect(first.destination(ofBucket: 0, fallback: true) == 1)
    }

    @Test func clientsHashWithTheGoldenRatio() throws {
        let client = try #require(IPAddress("10.0.0.1"))
        #expect(SourceHashingModel.bucket(of: client) == Int((UInt32(0x0A00_0001) &* 0x61C8_8647) >> 24))
        #expect(SourceHashingModel.bucket(of: client, port: 80) == Int((UInt32(0x0A00_0051) &* 0x61C8_8647) >> 24))
    }

    @Test func propertyWeightsSummingTo256HoldExactlyTheirWeights() async {
        await propertyCheck(input: Gen.int(in: 1...40).array(of: 1...12)) { raw in
            // Scale to a sum of exactly 256 keeping each at least 1.
            var weights = raw
            var sum = weights.reduce(0, +)
            while sum > 256, let index = weights.firstIndex(where: { $0 > 1 }) { weights[index] -= 1; sum -= 1 }
            if sum < 256 { weights[0] += 256 - sum }
            #expect(SourceHashingModel(weights: weights).heldBuckets == weights)
        }
    }
}

@Suite("mh model")
struct MaglevHashingModelTests {
    /// Measured on the kernel: 99:1 keeps 49:1 turns (1.98 % of the table; 1.6 % measured on 512
    /// clients), 90:10 keeps 9:1 (10 % of the table).
    @Test(arguments: [
        ([99, 1], [49, 1]), ([90, 10], [9, 1]), ([63, 7], [9, 1]), ([2667, 2667, 2000], [41, 41, 31]),
        ([1, 100], [1, 50]), ([0, 5], [0, 1]), ([0, 0], [0, 0]), ([63, 1], [63, 1]), ([64, 1], [32, 1]),
    ])
    func weightsAreQuantisedToSixBits(weights: [Int], turns: [Int]) {
        #expect(MaglevHashingModel.turns(lastWeights: weights) == turns)
    }

    @Test func entriesFollowTurnsWithAPartialLastRound() {
        // 4093 = 81 × 50 + 43: the first destination takes all 43 of the partial round.
        #expect(MaglevHashingModel.entryCounts(turns: [49, 1]) == [4012, 81])
        #expect(MaglevHashingModel.entryCounts(turns: [1, 49]) == [82, 4011])
        #expect(MaglevHashingModel.entryCounts(turns: [9, 1]) == [3684, 409])
        // Turns summing past the table: the first round does not finish.
        let many = MaglevHashingModel.entryCounts(turns: Array(repeating: 63, count: 70))
        #expect(many.reduce(0, +) == 4093)
        #expect(many.suffix(5) == [0, 0, 0, 0, 0])
    }

    private static func addresses(_ count: Int, base: UInt32 = 0x0AF4_0000) -> [SocketAddress] {
        (0..<count).map { index in
            let value = base + UInt32(index + 1)
            let bytes = [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: value >> $0) }
            return SocketAddress(address: IPAddress(bytes: bytes)!, port: 8080)
        }
    }

    /// The real populate loop (preferred positions, skips) gives each destination exactly the
    /// entry count of the turn arithmetic: positions never change how many entries one holds.
    @Test func populationMatchesEntryCounts() async {
        await propertyCheck(count: 20, input: Gen.int(in: 0...80).array(of: 1...8)) { weights in
            let destinations = zip(Self.addresses(weights.count), weights).map {
                MaglevHashingModel.Destination(address: $0, weight: $1)
            }
            let model = MaglevHashingModel(destinations: destinations)
            let turns = MaglevHashingModel.turns(lastWeights: weights)
            #expect(model.heldEntries == MaglevHashingModel.entryCounts(turns: turns))
        }
    }

    /// A weight-0 destination keeps the entries of its last weight: without fallback its clients
    /// are refused, with fallback they move to available destinations.
    @Test func drainingDestinationKeepsItsEntries() throws {
        let addresses = Self.addresses(3)
        let destinations = [
            MaglevHashingModel.Destination(address: addresses[0], weight: 0, lastWeight: 5),
            MaglevHashingModel.Destination(address: addresses[1], weight: 5),
            MaglevHashingModel.Destination(address: addresses[2], weight: 5),
        ]
        let model = MaglevHashingModel(destinations: destinations)
        #expect(model.heldEntries[0] > 1000)
        var refused = 0, moved = 0
        for index in 0..<2000 {
            let client = IPAddress(bytes: [198, 18, UInt8(index / 256), UInt8(index % 256)])!
            let plain = model.destination(of: client, fallback: false)
            let withFallback = try #require(model.destination(of: client, fallback: true))
            #expect(withFallback != 0)
            if plain == nil {
                refused += 1
                moved += 1
            } else {
                #expect(plain == withFallback)
            }
        }
        #expect(refused > 400 && refused < 900, "about a third of 2,000 clients hash to the draining destination")
        #expect(moved == refused)
    }
}
