import Foundation

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with the openssl CLI into a
/// temporary folder once per test run; plus a second, unrelated CA, to prove verification is real.
struct TestCertificates: Sendable {
    let directory: String
    var caCertificate: String { directory + "/ca.crt" }
    var serverCertificate: String { directory + "/server.crt" }
    var serverKey: String { directory + "/server.key" }
    /// A server certificate naming only `namedServerName` (no IP address): what `tls-server-name` is for.
    var namedServerCertificate: String { directory + "/named-server.crt" }
    var namedServerKey: String { directory + "/named-server.key" }
    static let namedServerName = "api.cluster.test"
    var clientCertificate: String { directory + "/client.crt" }
    var clientKey: String { directory + "/client.key" }
    var otherCACertificate: String { directory + "/other-ca.crt" }

    struct GenerationFailed: Error, CustomStringConvertible {
        var description: String
    }

    static func shared() throws -> TestCertificates { try generated.get() }

    private static let generated: Result<TestCertificates, any Error> = Result { try generate() }

    private static func generate() throws -> TestCertificates {
        let directory = NSTemporaryDirectory() + "canary-agent-kube-certs-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        func openssl(_ arguments: [String]) throws {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["openssl"] + arguments
            process.currentDirectoryURL = URL(fileURLWithPath: directory)
            let errors = Pipe()
            process.standardError = errors
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            process.waitUntilExit()
            guard process.terminationStatus == 0 else {
                let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                throw GenerationFailed(description: "openssl \(arguments.joined(separator: " ")): \(text)")
            }
        }
        for ca in ["ca", "other-ca"] {
            try openssl(
                ["req", "-x509"] + ec + [
                    "-keyout", "\(ca).key", "-out", "\(ca).crt", "-days", "3650", "-subj", "/CN=\(ca)",
                    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                ])
        }
        try "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"
            .write(toFile: directory + "/server.ext", atomically: true, encoding: .utf8)
        try "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n"
            .write(toFile: directory + "/client.ext", atomically: true, encoding: .utf8)
        try "subjectAltName=DNS:\(namedServerName)\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"
            .write(toFile: directory + "/named-server.ext", atomically: true, encoding: .utf8)
        for (name, subject) in [
            ("server", "/CN=kube-apiserver"), ("named-server", "/CN=\(namedServerName)"),
            ("client", "/O=system:nodes/CN=system:node:node-1"),
        ] {
            try openssl(["req"] + ec + ["-keyout", "\(name).key", "-out", "\(name).csr", "-subj", subject])
            try openssl([
                "x509", "-req", "-in", "\(name).csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", "\(name).crt", "-days", "3650", "-extfile", "\(name).ext",
            ])
        }
        return TestCertificates(directory: directory)
    }
}
