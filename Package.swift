// swift-tools-version:6.1
// ACON on the CPU: im2col + OpenBLAS sgemm convolutions and fused ACON activations, with
// forward and backward passes, optimizers, data sets, checkpoints and a benchmark harness.
// Data-parallel training over MPI is the optional `MPI` trait: `swift build --traits MPI`
// (needs libopenmpi-dev); without it nothing here needs Open MPI.
import PackageDescription

let package = Package(
  name: "swift-acon",
  platforms: [.macOS(.v15)],
  products: [
    .library(name: "TensorCore", targets: ["TensorCore"]),
    .library(name: "NN", targets: ["NN"]),
    .library(name: "ACON", targets: ["ACON"]),
    .library(name: "Collectives", targets: ["Collectives"]),
    .library(name: "ImageData", targets: ["ImageData"]),
    .library(name: "Training", targets: ["Training"]),
    // The gradient checker and the naive Double references, for the tests of programs that
    // write their own layers (it links XCTest: use it from test targets).
    .library(name: "TestSupport", targets: ["TestSupport"]),
    .library(name: "Zoo", targets: ["Zoo"]),
    .executable(name: "acon-train", targets: ["acon-train"]),
    .executable(name: "acon-bench", targets: ["acon-bench"]),
  ],
  traits: [
    .trait(
      name: "MPI",
      description: "Data-parallel training over MPI (acon-train train --distributed, under mpirun); needs Open MPI")
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    // Only for `swift package generate-documentation` (scripts/docs.sh): a command plugin,
    // never linked into a product.
    .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
  ],
  targets: [
    // MARK: - System libraries
    .systemLibrary(
      name: "CBLAS",
      pkgConfig: "openblas",
      providers: [.apt(["libopenblas-dev", "liblapacke-dev"]), .brew(["openblas"])]
    ),
    .systemLibrary(
      name: "CZlib",
      pkgConfig: "zlib",
      providers: [.apt(["zlib1g-dev"])]
    ),
    .systemLibrary(
      name: "CTurboJPEG",
      pkgConfig: "libturbojpeg",
      providers: [.apt(["libturbojpeg0-dev"]), .brew(["jpeg-turbo"])]
    ),
    .systemLibrary(
      name: "CJPEG",
      pkgConfig: "libjpeg",
      providers: [.apt(["libjpeg-dev"]), .brew(["jpeg-turbo"])]
    ),
    .systemLibrary(
      name: "CPNG",
      pkgConfig: "libpng",
      providers: [.apt(["libpng-dev"]), .brew(["libpng"])]
    ),
    .systemLibrary(
      name: "CMPI",
      pkgConfig: "ompi-c",
      providers: [.apt(["libopenmpi-dev", "openmpi-bin"])]
    ),

    // MARK: - Public API
    .target(
      name: "TensorCore", dependencies: ["CBLAS", "CThreadPool", "CLoweringKernels"],
      // Debian ships LAPACKE as a library of its own; Homebrew's OpenBLAS has it inside libopenblas.
      linkerSettings: [.linkedLibrary("lapacke", .when(platforms: [.linux]))]),
    .target(name: "NN", dependencies: ["TensorCore", "CAconKernels", "CDepthwiseKernels", "CCopyKernels", "CWinogradKernels", "CLayerKernels"]),
    // The persistent worker threads behind `parallelFor`.
    .target(name: "CThreadPool"),
    .target(name: "CAconKernels"),
    .target(name: "CDepthwiseKernels"),
    .target(name: "CCopyKernels"),
    // im2col's strided gathers (3-wide kernels at stride 2) in AVX-512.
    .target(name: "CLoweringKernels"),
    // C loops of NN's layers: BatchNorm2D's per-channel passes, MaxPool2D's forward.
    .target(name: "CLayerKernels"),
    // The transforms of Winograd F(2×2, 3×3) convolutions (Conv2D's Winograd path).
    .target(name: "CWinogradKernels"),
    .target(name: "ACON", dependencies: ["TensorCore", "NN", "CAconKernels"]),
    .target(name: "Collectives", dependencies: [.target(name: "CMPI", condition: .when(traits: ["MPI"]))]),
    .target(name: "CImageCodecs", dependencies: ["CPNG"]),
    // The loader's C kernels: a JPEG decode of a rectangle through libjpeg-turbo's libjpeg API.
    .target(name: "CImageKernels", dependencies: ["CJPEG"]),
    .target(name: "ImageData", dependencies: ["TensorCore", "CTurboJPEG", "CImageCodecs", "CImageKernels"]),
    .target(name: "Training", dependencies: ["TensorCore", "NN", "ACON", "Collectives", "CZlib", "ImageData"]),
    // The model zoo: ShuffleNetV2, TFNet and ResNet as the official ACON code builds them.
    .target(name: "Zoo", dependencies: ["NN", "ACON", "TensorCore"]),

    // MARK: - Executables
    .executableTarget(
      name: "acon-train",
      dependencies: [
        "Training", "ACON", "NN", "TensorCore", "ImageData", "Zoo",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ]
    ),
    .executableTarget(
      name: "acon-bench",
      dependencies: [
        "Training", "ACON", "NN", "TensorCore", "TestSupport", "CCopyKernels", "Zoo", "ImageData", "CTurboJPEG",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ],
      path: "Benchmarks/acon-bench"
    ),

    // MARK: - Test support and unit test bundles
    .target(name: "TestSupport", dependencies: ["TensorCore", "NN", "ACON", "Collectives"]),
    .testTarget(name: "TensorCoreTests", dependencies: ["TensorCore", "TestSupport"]),
    .testTarget(
      name: "NNTests",
      dependencies: ["NN", "TensorCore", "TestSupport", "Training", "CAconKernels", "CWinogradKernels", "CDepthwiseKernels"],
      exclude: ["Fixtures"]),
    .testTarget(
      name: "ACONTests", dependencies: ["ACON", "NN", "TensorCore", "TestSupport", "Training"], exclude: ["Fixtures"]),
    .testTarget(name: "ImageDataTests", dependencies: ["ImageData", "TensorCore"], exclude: ["Fixtures"]),
    .testTarget(
      name: "TrainingTests", dependencies: ["Training", "ACON", "NN", "TensorCore", "TestSupport", "Collectives"],
      exclude: ["Fixtures"]),
    .testTarget(
      name: "ZooTests", dependencies: ["Zoo", "Training", "ACON", "NN", "TensorCore", "TestSupport", "CZlib"],
      exclude: ["Fixtures"]),
    // The acon-train command's own logic (compare's grid, statistics and plots), @testable.
    .testTarget(name: "AconTrainTests", dependencies: ["acon-train", "Training", "NN", "TensorCore"]),
  ]
)
