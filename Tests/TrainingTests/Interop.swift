// Interop: the Python that the interop tests run, and what happens when it lacks what they need.
// On a developer's machine a missing package (or data set) skips the test with a message; under
// CI (CI=true), where .ci/run installs them into a venv, it fails the test, so that a skip can't
// hide an untested path.
import Foundation
import XCTest

enum Interop {
  /// The interpreter: `ACON_TEST_PYTHON` (CI points it at its venv), else `python3` on the PATH.
  static var python: String { ProcessInfo.processInfo.environment["ACON_TEST_PYTHON"] ?? "python3" }

  /// True under CI, where every interop test must run.
  static var isCI: Bool { ProcessInfo.processInfo.environment["CI"] == "true" }

  /// The error to throw when `what` is missing: an `XCTSkip` saying how to install it, or under CI a
  /// failure.
  static func missing(_ what: String, install: String) -> Error {
    isCI ? Missing(description: "\(what) is missing under CI=true (\(install)): .ci/run must provide it")
      : XCTSkip("\(what) is missing (\(install))")
  }

  /// Runs `python args…`, returning its exit status and standard output (standard error is
  /// dropped).
  static func run(_ args: [String]) throws -> (status: Int32, out: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = [python] + args
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = FileHandle.nullDevice
    try p.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
  }

  private struct Missing: Error, CustomStringConvertible { let description: String }
}
