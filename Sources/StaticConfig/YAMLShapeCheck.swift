// libyaml, the C parser Yams wraps (a target of the Yams package). Yams' `Parser` keeps its events
// private, and its composer hashes every mapping's keys to find duplicates while it builds the tree,
// so a check on the composed tree comes too late: an alias bomb used as a key spins inside
// `Yams.compose`. The check below reads libyaml's events itself, before Yams composes anything.
import CanaryCore
internal import CYaml

/// What an alias may repeat, in nodes (scalars, lists and mappings), over the whole file: each alias
/// counts the full size of what its anchor names, nested aliases included.
///
/// The static file has no need of anchors at scale: a legitimate file reuses a list of endpoints a few
/// times, a few hundred nodes. 100,000 is far above that and far below what costs anything: the walk
/// after the check then visits at most the file's own nodes plus 100,000, however the aliases nest.
/// A "billion laughs" file (343 bytes → 10⁹ nodes) or one list repeated into 4 million endpoints
/// passes the limit within a few of its aliases and is refused there.
let aliasNodeLimit = 100_000

/// Checks a file's shape event by event, in time and memory linear in its size, before Yams composes it:
///
/// - the nodes aliases repeat are counted, without expanding them, and the file is refused once they
///   pass `aliasNodeLimit`;
/// - every mapping key must be a plain value: a list, a mapping or an alias as a key is refused (no
///   field of the file is one, and Yams hashes whole keys);
/// - a key given twice in a mapping is one line naming the key and both lines (Yams' own error
///   carries the whole file).
///
/// A syntax error stops the check without a verdict: Yams then reports it, at the same place.
struct YAMLShapeCheck {
    let file: String

    func check(_ yaml: String) throws(InputProblem) {
        guard !yaml.isEmpty else { return }
        var yaml = yaml
        if let failure = yaml.withUTF8({ walk($0) }) { throw failure }
    }

    private struct Frame {
        var isMapping: Bool
        var anchor: String?
        /// This node's size with aliases expanded: itself and everything below it so far.
        var size = 1
        /// Mapping: the line of each key so far, and whether the next node is a key.
        var keyLines: [String: Int] = [:]
        var expectingKey = true
        /// Mapping: the latest key. Sequence: the number of items so far.
        var key: String?
        var index = 0
    }

    private func walk(_ bytes: UnsafeBufferPointer<UInt8>) -> InputProblem? {
        var parser = yaml_parser_t()
        guard yaml_parser_initialize(&parser) == 1 else { return nil }
        defer { yaml_parser_delete(&parser) }
        yaml_parser_set_encoding(&parser, YAML_UTF8_ENCODING)
        yaml_parser_set_input_string(&parser, bytes.baseAddress, bytes.count)

        var stack: [Frame] = []
        var anchors: [String: Int] = [:]
        var aliasNodes = 0

        /// A node of `size` nodes is complete: it counts in its parent, and the parent moves on.
        func complete(_ size: Int) {
            guard !stack.isEmpty else { return }
            let top = stack.count - 1
            stack[top].size = saturatingSum(stack[top].size, size)
            if stack[top].isMapping { stack[top].expectingKey.toggle() } else { stack[top].index += 1 }
        }
        var expectingKey: Bool { stack.last.map { $0.isMapping && $0.expectingKey } ?? false }
        func error(_ line: Int, _ frames: ArraySlice<Frame>, _ message: String) -> InputProblem {
            InputProblem.inFile(file, line: line, field: Self.path(frames), message: message)
        }

        var event = yaml_event_t()
        while true {
            // A syntax error: Yams, reading the same text, reports it with its line.
            guard yaml_parser_parse(&parser, &event) == 1 else { return nil }
            defer { yaml_event_delete(&event) }
            let line = Int(event.start_mark.line) + 1
            switch event.type {
            case YAML_DOCUMENT_END_EVENT, YAML_STREAM_END_EVENT:
                // One document only: Yams refuses a second one before composing it.
                return nil
            case YAML_SCALAR_EVENT:
                if expectingKey {
                    let key = String(
                        decoding: UnsafeBufferPointer(start: event.data.scalar.value, count: event.data.scalar.length),
                        as: UTF8.self)
                    let top = stack.count - 1
                    stack[top].key = key
                    if let first = stack[top].keyLines[key] {
                        return error(line, stack[...], "given twice (first on line \(first))")
                    }
                    stack[top].keyLines[key] = line
                }
                if let anchor = Self.string(event.data.scalar.anchor) { anchors[anchor] = 1 }
                complete(1)
            case YAML_ALIAS_EVENT:
                let name = Self.string(event.data.alias.anchor) ?? ""
                if expectingKey {
                    return error(line, stack.dropLast(), "a key must be a single value, not an alias (*\(excerpt(name)))")
                }
                // An undefined alias counts as one node: Yams refuses it.
                let size = anchors[name] ?? 1
                aliasNodes = saturatingSum(aliasNodes, size)
                if aliasNodes > aliasNodeLimit {
                    return error(
                        line, stack[...],
                        "the aliases expand too far: *\(excerpt(name)) takes what aliases repeat past \(aliasNodeLimit) nodes")
                }
                complete(size)
            case YAML_SEQUENCE_START_EVENT:
                if expectingKey { return error(line, stack.dropLast(), "a key must be a single value, not a list") }
                stack.append(Frame(isMapping: false, anchor: Self.string(event.data.sequence_start.anchor)))
            case YAML_MAPPING_START_EVENT:
                if expectingKey { return error(line, stack.dropLast(), "a key must be a single value, not a mapping") }
                stack.append(Frame(isMapping: true, anchor: Self.string(event.data.mapping_start.anchor)))
            case YAML_SEQUENCE_END_EVENT, YAML_MAPPING_END_EVENT:
                let frame = stack.removeLast()
                if let anchor = frame.anchor { anchors[anchor] = frame.size }
                complete(frame.size)
            default:
                continue
            }
        }
    }

    /// The field path of the node each frame is at, like `services[3].stable`, keys shortened.
    private static func path(_ frames: ArraySlice<Frame>) -> String {
        var path = ""
        for frame in frames {
            if frame.isMapping {
                guard let key = frame.key else { continue }
                path += path.isEmpty ? excerpt(key) : "." + excerpt(key)
            } else {
                path += "[\(frame.index)]"
            }
        }
        // Each key is an excerpt, but the file may nest a thousand levels deep: the path is one too.
        return excerpt(path, limit: 256)
    }

    private static func string(_ pointer: UnsafeMutablePointer<yaml_char_t>?) -> String? {
        pointer.map { String(decodingCString: $0, as: UTF8.self) }
    }
}

private func saturatingSum(_ a: Int, _ b: Int) -> Int {
    let (sum, overflow) = a.addingReportingOverflow(b)
    return overflow ? .max : sum
}

/// A value from the file as an error message shows it: on one line (control characters escaped)
/// and at most `limit` Unicode scalars, so a 10 MB key or value is not a 10 MB message. Scalars, not
/// characters: one character can hold any number of them (a letter and 10,000 combining accents).
func excerpt(_ text: String, limit: Int = 64) -> String {
    var result = ""
    var count = 0
    for scalar in text.unicodeScalars {
        if count == limit { return result + "…" }
        if scalar.properties.generalCategory == .control {
            result += scalar.escaped(asASCII: true)
        } else {
            result.unicodeScalars.append(scalar)
        }
        count += 1
    }
    return result
}
