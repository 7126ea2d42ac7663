// swift-tools-version:6.0
// libFuzzer targets for the package's file readers: IDX (gzipped or plain), CIFAR-10 batches and
// safetensors checkpoints (with the checks against a model), and the image decoders and transforms. A package of its own, so the main
// package's builds never meet these entry points; scripts/fuzz.sh builds it with
// `swift build --sanitize=fuzzer --sanitize=address` and runs each target over its seed corpus
// in Fuzz/Corpus.
import PackageDescription

let package = Package(
  name: "swift-acon-fuzz",
  dependencies: [
    .package(name: "swift-acon", path: "..")
  ],
  targets: [
    .executableTarget(
      name: "fuzz-idx", dependencies: [.product(name: "Training", package: "swift-acon")]),
    .executableTarget(
      name: "fuzz-cifar", dependencies: [.product(name: "Training", package: "swift-acon")]),
    .executableTarget(
      name: "fuzz-image", dependencies: [.product(name: "ImageData", package: "swift-acon")]),
    .executableTarget(
      name: "fuzz-safetensors",
      dependencies: [
        .product(name: "Training", package: "swift-acon"), .product(name: "NN", package: "swift-acon"),
      ]),
  ]
)
