import CLibmnl

/// What went wrong in one netlink exchange, said before a client gives it an operation and a
/// subject: each client maps it to its own typed error (`IPVSError`, `NodeNetworkError`).
public enum NetlinkError: Error, Hashable, Sendable, NetlinkParseFailure {
    /// The kernel refused the request: a positive errno (for ipset, 4096 and above are the
    /// subsystem's own codes) and its extended-ack text, if it sent one.
    case kernel(errno: Int32, message: String?)
    /// A socket call failed; a receive that timed out is EAGAIN.
    case system(call: String, errno: Int32)
    /// The kernel's answer did not parse.
    case malformed(String)
    /// The kernel said it dropped messages meant for this socket (NLMSG_OVERRUN): what was read
    /// is incomplete.
    case overrun
    /// A dump was inconsistent every time it was read (NLM_F_DUMP_INTR: the table changed while
    /// the kernel walked it), this many times.
    case dumpInterrupted(attempts: Int)

    /// The errno a client reports.
    public var errno: Int32 {
        switch self {
        case .kernel(let code, _), .system(_, let code): code
        case .malformed: EBADMSG
        case .overrun: ENOBUFS
        case .dumpInterrupted: EINTR
        }
    }
}
