// swift-tools-version:6.1
// A custom CNN trained, checkpointed, resumed and evaluated with swift-acon's Trainer.
// The dependency is the repository two folders up. A path dependency's package name is its
// folder's name (`swift-acon` for a clone made with `git clone …/swift-acon`): this manifest
// reads it, so the example builds from any checkout; in your own package write it out.
import Foundation
import PackageDescription

let acon = URL(fileURLWithPath: Context.packageDirectory).appendingPathComponent("../..").standardized.lastPathComponent

let package = Package(
  name: "CustomNetwork",
  platforms: [.macOS(.v15)],
  dependencies: [.package(path: "../..")],
  targets: [
    .executableTarget(
      name: "CustomNetwork",
      dependencies: [
        .product(name: "ACON", package: acon), .product(name: "NN", package: acon),
        .product(name: "TensorCore", package: acon), .product(name: "Training", package: acon),
      ])
  ]
)
