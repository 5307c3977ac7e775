/// What `canary-agent --version` prints, and what the container image's labels carry
/// (`org.opencontainers.image.version`, `org.opencontainers.image.revision`; deploy/build-image.sh).
///
/// The version is this constant, changed with each release. The source revision (a git commit) cannot
/// be in the source it names, so the binary carries a 64-byte slot that deploy/stamp-revision.py fills
/// in the linked executable after the build: no generated source file in the tree, no compiler flag
/// that would rebuild every module when the commit changes, and a binary built any other way (a
/// debug build, `swift test`) says `unknown`. The slot is read through a public global variable, so
/// the optimizer cannot assume its bytes are the literal's NULs and fold the result to `unknown`;
/// the build script checks the stamped binary's `--version` anyway.
enum BuildInfo {
    /// The release version (semantic versioning); the image's tag and its version label.
    static let version = "0.1.0"

    /// The git commit the binary was built from (with `-dirty` when the tree had uncommitted changes),
    /// or `unknown` when the build did not stamp one.
    static var revision: String {
        canaryAgentRevisionSlot.withUTF8Buffer { bytes in
            let value = bytes.dropFirst(revisionMarkerLength).prefix { $0 != 0 }
            return value.isEmpty ? "unknown" : String(decoding: value, as: UTF8.self)
        }
    }

    /// `--version`'s line: `0.1.0 (revision 1234abcd...)`.
    static var versionLine: String { "\(version) (revision \(revision))" }
}

/// The length of `canary-agent-revision=`, the marker deploy/stamp-revision.py looks for (written as a
/// number, not computed from a second copy of the marker, so the marker is in the binary once).
private let revisionMarkerLength = 22

/// The marker, then 64 NUL bytes that deploy/stamp-revision.py overwrites with the revision (at most
/// 63 bytes, NUL-terminated). Public and `var`: see ``BuildInfo``. Nothing assigns it, so the
/// unchecked access (`nonisolated(unsafe)`) is only ever a read.
nonisolated(unsafe) public var canaryAgentRevisionSlot: StaticString = "canary-agent-revision=\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"
