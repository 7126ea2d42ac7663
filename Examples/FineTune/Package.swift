// swift-tools-version:6.1
// Fine-tuning from a checkpoint: a network pretrained on one task gets a new head for another,
// keeps its backbone weights (a non-strict state_dict load) and trains on.
// The dependency is the repository two folders up; its package name is that folder's name,
// which this manifest reads (in your own package write it out, e.g. "swift-acon").
import Foundation
import PackageDescription

let acon = URL(fileURLWithPath: Context.packageDirectory).appendingPathComponent("../..").standardized.lastPathComponent

let package = Package(
  name: "FineTune",
  platforms: [.macOS(.v15)],
  dependencies: [.package(path: "../..")],
  targets: [
    .executableTarget(
      name: "FineTune",
      dependencies: [
        .product(name: "ACON", package: acon), .product(name: "NN", package: acon),
        .product(name: "TensorCore", package: acon), .product(name: "Training", package: acon),
      ])
  ]
)
