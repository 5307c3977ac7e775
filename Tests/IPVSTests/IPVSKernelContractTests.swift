import IPVS
import IPVSTestSupport
import Testing

/// The contract of `IPVSKernel` (`IPVSKernelContract`) on the in-memory kernel every planner and
/// reconciler test runs on. The same cases run against the real kernel in the VM
/// (Tests/IPVSKernelTests/IPVSKernelContractKernelTests.swift).
@Suite("IPVS kernel contract: the in-memory kernel")
struct IPVSKernelContractTests {
    @Test(arguments: IPVSKernelContract.cases)
    func inMemory(_ contract: IPVSKernelContractCase) throws {
        try contract.run(on: InMemoryIPVS())
    }
}
