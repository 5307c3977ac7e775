import Testing

@testable import NodeNetwork

#if canImport(Glibc)
import Glibc
#endif

/// A directory laid out like /proc/sys, removed afterwards.
final class SysctlTree {
    let root: String

    init(_ values: [String: String]) throws {
        var template = Array("/tmp/canary-sysctl-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw NetworkNamespace.Failure(description: "mkdtemp failed") }
        root = String(cString: made)
        for (name, value) in values { try write(name, value) }
    }

    deinit { _ = try? shell("rm", "-rf", root) }

    func write(_ name: String, _ contents: String) throws {
        let path = root + "/" + name.replacingDots()
        try shell("mkdir", "-p", String(path[..<path.lastIndex(of: "/")!]))
        try shell("tee", path, input: contents)
    }

    func contents(_ name: String) throws -> String {
        try shell("cat", root + "/" + name.replacingDots())
    }
}

extension String {
    fileprivate func replacingDots() -> String { String(map { $0 == "." ? "/" : $0 }) }
}

@Suite struct SysctlsTests {
    @Test func setsOnlyTheValuesThatDifferAndReportsThem() throws {
        let tree = try SysctlTree([
            "net.ipv4.ip_forward": "0\n",
            "net.ipv4.vs.conntrack": "1\n",
            "net.ipv4.vs.expire_nodest_conn": "0\n",
            "net.ipv4.vs.expire_quiescent_template": "1\n",
        ])
        let sysctls = Sysctls(root: tree.root)
        let changes = try sysctls.ensure(SysctlSetting.ipvsRequired)
        #expect(changes == [
            SysctlChange(name: "net.ipv4.ip_forward", oldValue: "0", newValue: "1"),
            SysctlChange(name: "net.ipv4.vs.expire_nodest_conn", oldValue: "0", newValue: "1"),
        ])
        #expect(try tree.contents("net.ipv4.ip_forward") == "1\n")
        #expect(try tree.contents("net.ipv4.vs.expire_nodest_conn") == "1\n")
        #expect(try sysctls.ensure(SysctlSetting.ipvsRequired) == [])
    }

    @Test func aMissingKeyIsAnErrorNamingItAndChangesNothing() throws {
        let tree = try SysctlTree(["net.ipv4.ip_forward": "0\n"])
        let sysctls = Sysctls(root: tree.root)
        do {
            _ = try sysctls.ensure(SysctlSetting.ipvsRequired)
            Issue.record("ensure succeeded without net.ipv4.vs.*")
        } catch {
            guard case .sysctl(let name, let reason) = error else {
                Issue.record("unexpected \(error)")
                return
            }
            #expect(name == "net.ipv4.vs.conntrack")
            #expect(reason.contains("no such key"))
            #expect(error.description.contains("net.ipv4.vs.conntrack"))
        }
        #expect(try tree.contents("net.ipv4.ip_forward") == "0\n")
    }

    @Test func comparesValuesWordByWord() throws {
        let tree = try SysctlTree(["net.ipv4.ip_local_port_range": "32768\t60999\n"])
        let sysctls = Sysctls(root: tree.root)
        #expect(try sysctls.ensure([SysctlSetting("net.ipv4.ip_local_port_range", "32768 60999")]) == [])
        #expect(try sysctls.ensure([SysctlSetting("net.ipv4.ip_local_port_range", "40000 60999")])
            == [SysctlChange(name: "net.ipv4.ip_local_port_range", oldValue: "32768\t60999", newValue: "40000 60999")])
        #expect(try sysctls.read("net.ipv4.ip_local_port_range") == "40000 60999")
    }

    @Test func aShorterValueReplacesALongerOne() throws {
        let tree = try SysctlTree(["net.core.somaxconn": "4096\n"])
        let sysctls = Sysctls(root: tree.root)
        try sysctls.write("net.core.somaxconn", "1")
        #expect(try tree.contents("net.core.somaxconn") == "1\n")
    }

    @Test func namesWithSlashesKeepTheirDots() throws {
        let sysctls = Sysctls(root: "/r")
        #expect(try sysctls.path(of: "net.ipv4.conf.all.forwarding") == "/r/net/ipv4/conf/all/forwarding")
        #expect(try sysctls.path(of: "net/ipv4/conf/eth0.100/forwarding") == "/r/net/ipv4/conf/eth0.100/forwarding")
        for bad in ["", "net..ipv4", "net/../../etc/passwd", "net.ipv4."] {
            #expect(throws: NodeNetworkError.self) { try sysctls.path(of: bad) }
        }
    }

    @Test func theIPv6ForwardingSettingIsSeparate() {
        #expect(SysctlSetting.ipv6Forwarding == SysctlSetting("net.ipv6.conf.all.forwarding", "1"))
        #expect(!SysctlSetting.ipvsRequired.contains(SysctlSetting.ipv6Forwarding))
        #expect(Set(SysctlSetting.ipvsRequired.map(\.name)) == [
            "net.ipv4.ip_forward", "net.ipv4.vs.conntrack", "net.ipv4.vs.expire_nodest_conn",
            "net.ipv4.vs.expire_quiescent_template",
        ])
    }

    /// /proc/sys/net is per network namespace (the reading thread's): set forwarding in a
    /// throwaway namespace and read it back from the kernel.
    @Test func setsARealKernelValue() throws {
        try NetworkNamespace.run {
            let sysctls = Sysctls()
            try sysctls.write("net.ipv4.ip_forward", "0")
            try sysctls.write("net.ipv6.conf.all.forwarding", "0")
            let changes = try sysctls.ensure([SysctlSetting("net.ipv4.ip_forward", "1"), SysctlSetting.ipv6Forwarding])
            #expect(changes == [
                SysctlChange(name: "net.ipv4.ip_forward", oldValue: "0", newValue: "1"),
                SysctlChange(name: "net.ipv6.conf.all.forwarding", oldValue: "0", newValue: "1"),
            ])
            #expect(try shell("cat", "/proc/sys/net/ipv4/ip_forward") == "1\n")
            #expect(try sysctls.ensure([SysctlSetting("net.ipv4.ip_forward", "1")]) == [])
        }
    }

    /// The IPVS keys themselves, in the VM where ip_vs is loaded (they are per namespace too).
    @Test(.requiresIPVSSysctls)
    func setsTheIPVSKeysOnARealKernel() throws {
        try NetworkNamespace.run {
            let sysctls = Sysctls()
            for setting in SysctlSetting.ipvsRequired { try sysctls.write(setting.name, "0") }
            let changes = try sysctls.ensure(SysctlSetting.ipvsRequired)
            #expect(changes.map(\.name) == SysctlSetting.ipvsRequired.map(\.name))
            for setting in SysctlSetting.ipvsRequired {
                #expect(try sysctls.read(setting.name) == "1")
            }
            #expect(try sysctls.ensure(SysctlSetting.ipvsRequired) == [])
        }
    }
}
