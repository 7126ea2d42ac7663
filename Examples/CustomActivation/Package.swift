// swift-tools-version:6.1
// A custom ACON variant (ACON-C with a fixed β), trained in a small network, with its gradient
// checked by swift-acon's GradientChecker (the TestSupport product) in `swift test`.
// The dependency is the repository two folders up; its package name is that folder's name,
// which this manifest reads (in your own package write it out, e.g. "swift-acon").
import Foundation
import PackageDescription

let acon = URL(fileURLWithPath: Context.packageDirectory).appendingPathComponent("../..").standardized.lastPathComponent

let package = Package(
  name: "CustomActivation",
  platforms: [.macOS(.v15)],
  dependencies: [.package(path: "../..")],
  targets: [
    .target(
      name: "FixedBetaAcon",
      dependencies: [
        .product(name: "ACON", package: acon), .product(name: "NN", package: acon),
        .product(name: "TensorCore", package: acon),
      ]),
    .executableTarget(
      name: "CustomActivation",
      dependencies: ["FixedBetaAcon", .product(name: "Training", package: acon)]),
    .testTarget(
      name: "FixedBetaAconTests",
      dependencies: ["FixedBetaAcon", .product(name: "TestSupport", package: acon)]),
  ]
)
