import IPVS
import IPVSNetlink
import IPVSTestSupport
import Testing

/// The contract of `IPVSKernel` (`IPVSKernelContract`) on the real kernel: the very cases the host
/// runs against the in-memory kernel (Tests/IPVSTests/IPVSKernelContractTests.swift), each on an
/// empty table of its own.
@Suite("IPVS kernel contract: the real kernel", .requiresIPVS, .serialized)
struct IPVSKernelContractKernelTests {
    @Test(arguments: IPVSKernelContract.cases)
    func netlink(_ contract: IPVSKernelContractCase) throws {
        try KernelTable.exclusive { ipvs in try contract.run(on: ipvs) }
    }
}
